"""Re-encode a tree of videos to 3 fps, short side 224, H.264, no audio (CLIP4Clip's
``preprocess/compress_video.py``, made safe to rerun and to point at real data).

    python -m preprocess.compress_video --input_root raw/ --output_root compressed/ --num_workers 4

What it does, and how it differs from the published script:

* Every file whose extension is a video extension (:data:`VIDEO_EXTENSIONS`, any case) is
  re-encoded to ``output_root/<same relative path>``: the folder structure is kept (the
  published script flattens it, so names in different folders overwrite each other).
* Frames: 3 fps, then scale so the *short* side is 224 and both sides are even, for
  portrait too (the published filter squashes portrait video to a short side of
  224 * aspect). Output frame k is the input frame whose start is nearest to k / 3 s,
  ``round(k * fps_in / 3)``: the frame ``dataloaders.video_reader`` picks for time k / 3 on
  the raw video, so sampling compressed and raw videos at 1 fps gives the same frames.
  (Done as ``settb=AVTB,setpts=PTS-<half input frame>/TB,fps=3:round=up``; the published ``-r 3``
  duplicates and drifts: 29.97 fps input gave frames 0, 1, 8, 18, ... and 32 frames for
  10 s.)
* H.264 (libx264, yuv420p, ``--crf``/``--preset``, ffmpeg's defaults 23/medium as the
  published script got), first video stream only, no audio, subtitles or data streams.
  In AVI without B-frames (``-bf 0``): AVI has no presentation timestamps, and decord
  returns wrong frames after seeking in AVI with B-frames.
* Names: the output keeps the input's name and a container that matches its extension
  (``.mp4``/``.m4v`` mp4 with the index up front, ``.mov`` mov, ``.mkv`` matroska, ``.avi``
  avi, ``.flv`` flv, ``.3gp`` 3gp), because loaders find videos by name (MSR-VTT
  ``<id>.mp4``, MSVD ``<id>.avi``). WebM, MPEG-PS (``.webm``, ``.mpg``, ``.mpeg``) become
  ``<stem>.mp4``: WebM cannot hold H.264 and H.264 in MPEG-PS has no frame index, so
  readers would have to guess frame counts. Loaders that walk ``features_path``
  (ActivityNet, LSMDC) match on the stem. Two inputs that would map to one output are
  both reported as failures.
* Resumable: an output is skipped only when it is proven complete: the manifest
  ``<output_root>/.compress_video_manifest.jsonl`` (:mod:`preprocess.output_manifest`) has a
  line for it written after it was finished, and source (size, mtime), settings and output
  (size, SHA-256) still match that line. Anything else is redone, including a file that
  merely exists at the output name (truncated by another tool, an older run or a crash).
  Atomic: ffmpeg writes ``.<name>.partial`` in the output folder, which is checked (opens,
  H.264, target short side and frame rate, first frame decodes) and renamed on success; a
  killed run leaves at most such temporaries, overwritten by the next run.
* Interrupts: SIGINT (Ctrl-C) or SIGTERM stops at once: queued videos are not started,
  running ffmpeg processes are killed and their temporaries deleted, the summary is printed,
  and the exit status is 130 (SIGINT) or 143 (SIGTERM). ffmpeg runs in its own session, so a
  Ctrl-C in the terminal reaches only this script (an ffmpeg that stopped on its own at
  Ctrl-C would leave a short but valid-looking video). On Linux each ffmpeg also gets
  SIGKILL when this process dies (``PR_SET_PDEATHSIG``), so ``kill -9`` leaves no orphans.
* Failures are collected, printed with ffmpeg's message at the end, and the exit status
  is 1 (the published script ignores ffmpeg's status and copies the original file in).
* ffmpeg: ``ffmpeg`` on PATH, else the binary of the ``imageio-ffmpeg`` package. Always
  an argument list, never a shell; paths go in absolute with the ``file:`` protocol, so
  spaces, quotes, ``$(...)``, leading dashes and colons in names are plain characters.
* ``--num_workers`` ffmpeg processes at once, each with ``cpu_count // num_workers``
  threads, so the machine is not oversubscribed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

from preprocess.output_manifest import OutputManifest

logger = logging.getLogger("compress_video")

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp"})
# input extension -> (output extension or None to keep the name, ffmpeg muxer)
CONTAINERS: dict[str, tuple[str | None, str]] = {
    ".mp4": (None, "mp4"),
    ".m4v": (None, "mp4"),
    ".mov": (None, "mov"),
    ".mkv": (None, "matroska"),
    ".avi": (None, "avi"),
    ".flv": (None, "flv"),
    ".3gp": (None, "3gp"),
    ".webm": (".mp4", "mp4"),
    ".mpg": (".mp4", "mp4"),
    ".mpeg": (".mp4", "mp4"),
}
STDERR_TAIL = 800  # characters of ffmpeg's message kept for the failure summary
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.2  # the main thread wakes this often so a signal's handler runs soon


@dataclass(frozen=True)
class Settings:
    fps: int = 3
    short_side: int = 224
    crf: int = 23
    preset: str = "medium"
    threads: int = 1

    def output_defining(self) -> dict:
        """What the manifest compares: the settings that change the output (not ``threads``)."""
        return {k: v for k, v in asdict(self).items() if k != "threads"}


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    muxer: str

    @property
    def tmp(self) -> Path:
        return self.dst.with_name(f".{self.dst.name}.partial")


@dataclass(frozen=True)
class Outcome:
    job: Job
    status: str  # "done" | "skipped" | "failed" | "interrupted"
    message: str = ""


def find_ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as err:
        raise RuntimeError("no ffmpeg: install ffmpeg or `pip install imageio-ffmpeg`") from err
    return imageio_ffmpeg.get_ffmpeg_exe()


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def output_path(rel: Path, output_root: Path) -> tuple[Path, str]:
    new_ext, muxer = CONTAINERS[rel.suffix.lower()]
    dst = output_root / rel
    return (dst if new_ext is None else dst.with_suffix(new_ext)), muxer


def _walk(input_root: Path, skip: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(input_root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() != skip)
        for name in sorted(filenames):
            if is_video(here / name):
                yield here / name


def plan_jobs(input_root: Path, output_root: Path) -> tuple[list[Job], list[Outcome]]:
    """Jobs for every video under ``input_root``; name collisions come back as failures."""
    input_root, output_root = input_root.resolve(), output_root.resolve()
    by_dst: dict[Path, list[Job]] = {}
    for src in _walk(input_root, output_root):
        dst, muxer = output_path(src.relative_to(input_root), output_root)
        by_dst.setdefault(dst, []).append(Job(src, dst, muxer))
    jobs, failures = [], []
    for dst, group in by_dst.items():
        if len(group) == 1:
            jobs.append(group[0])
            continue
        names = ", ".join(str(j.src) for j in group)
        failures += [Outcome(j, "failed", f"several inputs map to {dst}: {names}") for j in group]
    return jobs, failures


def input_frame_rate(path: Path) -> float | None:
    """The first video stream's average frame rate, None when PyAV cannot tell."""
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return float(rate) if rate else None
    except Exception:
        return None


def video_filter(settings: Settings, input_fps: float | None) -> str:
    """fps then scale; the half-frame shift makes fps=...:round=up pick the nearest frame."""
    side = settings.short_side
    scale = f"scale=w='if(gte(iw,ih),-2,{side})':h='if(gte(iw,ih),{side},-2)'"
    rate = f"fps={settings.fps}:round=up"
    if input_fps:
        # microsecond time base first: in a 1/fps time base the shift would round away
        rate = f"settb=AVTB,setpts=PTS-{0.5 / input_fps:.9f}/TB,{rate}"
    return f"{rate},{scale}"


def ffmpeg_command(ffmpeg: str, job: Job, settings: Settings, input_fps: float | None = None) -> list[str]:
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-i", f"file:{job.src.resolve()}", "-map", "0:v:0", "-an", "-sn", "-dn"]
    cmd += ["-vf", video_filter(settings, input_fps)]
    cmd += ["-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf), "-pix_fmt", "yuv420p"]
    cmd += ["-threads", str(settings.threads)]
    if job.muxer == "mp4":
        cmd += ["-movflags", "+faststart"]
    if job.muxer == "avi":  # AVI has no presentation timestamps: B-frames make seeking readers wrong
        cmd += ["-bf", "0"]
    cmd += ["-f", job.muxer, f"file:{job.tmp}"]
    return cmd


def output_is_done(path: Path, settings: Settings) -> bool:
    """A finished output: opens, is H.264 with the target short side and frame rate, first frame decodes."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            ok = (
                stream.codec_context.name == "h264"
                and min(stream.width, stream.height) == settings.short_side
                and rate is not None
                and abs(float(rate) - settings.fps) < 0.01
            )
            return ok and next(container.decode(stream), None) is not None
    except Exception:  # any failure to read means: do it again
        return False


# Run as `python -c` between fork and ffmpeg: ask the kernel for SIGKILL when the thread that
# started us ends, give up if that already happened, then become ffmpeg (exec keeps the pid and
# the parent-death signal). Not a preexec_fn: Python code in a child forked from this threaded
# process can deadlock (seen: a PyAV scaler freed by the fork's thread clean-up hung for ever).
_EXEC_WITH_PARENT_DEATH_SIGNAL = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def dying_with_this_process(cmd: list[str]) -> list[str]:
    """``cmd`` started so that it gets SIGKILL when this process dies, even by ``kill -9`` (Linux;
    the thread that starts it must wait for it, so it never ends first). Unchanged elsewhere."""
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PARENT_DEATH_SIGNAL, str(os.getpid()), *cmd]


class FfmpegProcesses:
    """The running ffmpeg processes of one run. :meth:`stop` (from a signal handler) kills them
    and keeps any more from starting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # taken by workers around start and by stop(), never held long
        self._running: set[subprocess.Popen] = set()
        self.stopped_by: int | None = None

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess | None:
        """Run ``cmd`` to its end; None when stopped before it could start."""
        with self._lock:
            if self.stopped_by is not None:
                return None
            proc = subprocess.Popen(
                dying_with_this_process(cmd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only this script
            )
            self._running.add(proc)
        try:
            stdout, stderr = proc.communicate()
        finally:
            with self._lock:
                self._running.discard(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    def stop(self, signum: int) -> None:
        if self.stopped_by is not None:  # a second signal while stopping
            return
        self.stopped_by = signum
        with self._lock:
            for proc in self._running:
                proc.kill()


def compress_one(ffmpeg: str, job: Job, settings: Settings, manifest: OutputManifest, processes: FfmpegProcesses) -> Outcome:
    if processes.stopped_by is not None:
        return Outcome(job, "interrupted")
    if manifest.is_done(job.src, job.dst, settings.output_defining()):
        return Outcome(job, "skipped")
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    job.tmp.unlink(missing_ok=True)
    try:
        cmd = ffmpeg_command(ffmpeg, job, settings, input_frame_rate(job.src))
        result = processes.run(cmd)
        if result is None or (result.returncode != 0 and processes.stopped_by is not None):
            return Outcome(job, "interrupted")
        if result.returncode != 0:
            return Outcome(job, "failed", f"ffmpeg exit {result.returncode}: {_tail(result.stderr)}")
        if not output_is_done(job.tmp, settings):
            return Outcome(job, "failed", f"ffmpeg wrote no usable video {_tail(result.stderr)}".strip())
        os.replace(job.tmp, job.dst)
        manifest.record(job.src, job.dst, settings.output_defining())
        return Outcome(job, "done")
    except OSError as err:
        return Outcome(job, "failed", f"{type(err).__name__}: {err}")
    finally:
        job.tmp.unlink(missing_ok=True)


def _tail(text: str) -> str:
    text = " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


@contextlib.contextmanager
def signals_stop(processes: FfmpegProcesses) -> Iterator[None]:
    """While inside: SIGINT and SIGTERM call ``processes.stop`` instead of raising in the middle
    of the pool (a KeyboardInterrupt there leaves the pool working through its queue).
    Only the main thread can install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda signum, _frame: processes.stop(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(
    jobs: Sequence[Job], settings: Settings, num_workers: int, ffmpeg: str, manifest: OutputManifest, processes: FfmpegProcesses
) -> list[Outcome]:
    """Every job's outcome; after ``processes.stop`` the rest come back "interrupted" at once."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=num_workers) as pool, tqdm(total=len(jobs), unit="video") as bar:
        futures = [pool.submit(compress_one, ffmpeg, job, settings, manifest, processes) for job in jobs]
        pending = set(futures)
        while pending:
            # a timeout, not a plain wait: the main thread must wake up to run a signal's handler
            finished, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
            bar.update(len(finished))
    return [future.result() for future in futures]


def summarize(outcomes: Sequence[Outcome], stopped_by: int | None = None) -> int:
    """Log the counts and every failure; the process exit status (128 + the signal when
    interrupted, else 1 when any failed)."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed", "interrupted")}
    logger.info(
        "%d videos: %d compressed, %d already done, %d failed, %d not done (interrupted)",
        len(outcomes),
        counts["done"],
        counts["skipped"],
        counts["failed"],
        counts["interrupted"],
    )
    for outcome in sorted((o for o in outcomes if o.status == "failed"), key=lambda o: str(o.job.src)):
        logger.error("FAILED %s: %s", outcome.job.src, outcome.message)
    if stopped_by is not None:
        logger.error("stopped by %s: rerun the same command to finish", signal.Signals(stopped_by).name)
        return 128 + stopped_by
    return 1 if counts["failed"] else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--input_root", type=Path, required=True, help="folder of raw videos (walked recursively)")
    p.add_argument("--output_root", type=Path, required=True, help="where compressed videos go (same layout)")
    p.add_argument("--num_workers", type=int, default=max(1, cpus // 2), help="ffmpeg processes at once")
    p.add_argument("--fps", type=int, default=3)
    p.add_argument("--short_side", type=int, default=224)
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--preset", default="medium")
    args = p.parse_args(argv)
    if args.num_workers < 1:
        p.error("--num_workers must be >= 1")
    if not args.input_root.is_dir():
        p.error(f"--input_root {args.input_root} is not a folder")
    if args.input_root.resolve() == args.output_root.resolve():
        p.error("--input_root and --output_root must differ")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    threads = max(1, (os.cpu_count() or 1) // args.num_workers)
    settings = Settings(args.fps, args.short_side, args.crf, args.preset, threads)
    ffmpeg = find_ffmpeg()
    jobs, failures = plan_jobs(args.input_root, args.output_root)
    logger.info("%d videos under %s; ffmpeg: %s", len(jobs) + len(failures), args.input_root, ffmpeg)
    manifest = OutputManifest(args.output_root.resolve(), args.input_root.resolve())
    manifest.compact()
    processes = FfmpegProcesses()
    with signals_stop(processes):
        outcomes = run(jobs, settings, args.num_workers, ffmpeg, manifest, processes)
    return summarize(failures + outcomes, processes.stopped_by)


if __name__ == "__main__":
    sys.exit(main())
