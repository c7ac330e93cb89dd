"""Baseline for bench_video.py: a clip reader that works the way CLIP4Clip's
`RawVideoExtractorCV2` does (our own code, written from its described behaviour).

* OpenCV `VideoCapture`; `fps = int(CAP_PROP_FPS)` (29.97 -> 29);
  duration = ceil(frame_count / fps) seconds.
* For every second `sec` in `0 .. duration` (inclusive), one seek
  (`CAP_PROP_POS_FRAMES = sec * fps`) and one `read()`; stop at the first failed read.
* Each frame: BGR -> RGB, to a PIL image, `Resize(224, bicubic)`, `CenterCrop(224)`,
  `ToTensor`, `Normalize` (CLIP mean/std), one frame at a time.
* Then, with more than `max_frames` frames, `slice_framepos` 2 keeps
  `np.linspace(0, L - 1, max_frames, dtype=int)`; the clip is zero-padded to `max_frames`
  with a mask.

Every second of the video is decoded and transformed, whatever `max_frames` is.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_transform(size: int = 224) -> T.Compose:
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            lambda image: image.convert("RGB"),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


class CV2ClipReader:
    def __init__(self, max_frames: int = 12, sample_fp: int = 1, size: int = 224, slice_framepos: int = 2):
        self.max_frames = max_frames
        self.sample_fp = sample_fp
        self.size = size
        self.slice_framepos = slice_framepos
        self.transform = clip_transform(size)

    def _frames(self, path: str) -> list[torch.Tensor]:
        cap = cv2.VideoCapture(path)
        frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = int(cap.get(cv2.CAP_PROP_FPS))
        duration = math.ceil(frame_count / fps)
        offsets = list(range(0, fps, max(1, fps // self.sample_fp)))[: self.sample_fp]
        images = []
        for sec in range(duration + 1):
            ok = True
            for offset in offsets:
                cap.set(cv2.CAP_PROP_POS_FRAMES, sec * fps + offset)
                ok, frame = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                images.append(self.transform(Image.fromarray(rgb)))
            if not ok:
                break
        cap.release()
        return images

    def __call__(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._frames(str(path))
        video = torch.stack(images)
        if len(video) > self.max_frames:
            if self.slice_framepos == 0:
                video = video[: self.max_frames]
            elif self.slice_framepos == 1:
                video = video[-self.max_frames :]
            else:
                video = video[np.linspace(0, len(video) - 1, num=self.max_frames, dtype=int)]
        out = torch.zeros(self.max_frames, 3, self.size, self.size)
        out[: len(video)] = video
        mask = torch.zeros(self.max_frames, dtype=torch.int64)
        mask[: len(video)] = 1
        return out, mask
