"""torchrun target of the GPU check: `main_task_retrieval.main` with INFO logging from the
start, so the process-group line (logged before the run sets up its own logging) is printed.

    torchrun --standalone --nproc_per_node 1 -m bench.gpu_check.ddp_entry <main_task_retrieval arguments>
"""

import logging
import sys

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

import main_task_retrieval  # noqa: E402

sys.exit(main_task_retrieval.main(sys.argv[1:]))
