"""The built-in synthetic temporal benchmark, trained from scratch on CPU.

Clips of coloured shapes moving, captioned with colour, shape, direction and event order;
every test clip comes with temporal twins (the same frames in another order) that only a
model using frame order can tell apart.

- :mod:`synthetic.generate`: writes the dataset in MSR-VTT's file format
  (``python -m synthetic.generate``), and :mod:`synthetic.long_videos` long videos made of
  several clips with their segment boundaries (ground truth for moment search);
- :mod:`synthetic.dataset`: ``--datatype synthetic``, the MSR-VTT loader plus the hooks below;
- :mod:`synthetic.twin_sampler`: batches whose halves are twins (``--twin_batches``);
- :mod:`synthetic.twin_metrics`: the temporal report (twin accuracy, twin-query R@1);
- :mod:`synthetic.demo`: the demo and its long benchmark schedule, through the real
  ``main_task_retrieval.py`` (``bash scripts/demo.sh``, ``python -m bench.bench_synthetic``).
"""
