"""preprocess/compress_video.py: layout, names, geometry, frame rate, audio, resumability,
failure reporting. Inputs are the frame-coded test videos, so output frames can be traced
back to input frames."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from preprocess import compress_video as cv
from preprocess.output_manifest import MANIFEST_NAME, OutputManifest
from tests import video_fixtures as vf

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '$(touch pwned) it\'s "q".mp4'
FAST = ["--preset", "ultrafast", "--num_workers", "2"]


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    return vf.video_set(tmp_path_factory)


def _with_audio(src: Path, dst: Path) -> Path:
    ffmpeg = cv.find_ffmpeg()
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", f"file:{src}", "-f", "lavfi", "-i", "sine=d=3"]
    cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", f"file:{dst}"]
    subprocess.run(cmd, check=True)
    return dst


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "preprocess.compress_video", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# name in the input tree -> fixture it copies
TREE = {
    f"a b/c'd/{HOSTILE}": "h264_2997",
    "-lead.avi": "mpeg4_25_odd",
    "nested/deeper/portrait.mp4": "h264_24_portrait",
    "x:colon.mkv": "av1_25",
    "clip.webm": "vp9_24_odd",
    "UPPER.MP4": "hevc_30",
}
EXPECTED_OUT = {
    f"a b/c'd/{HOSTILE}": "h264_2997",
    "-lead.avi": "mpeg4_25_odd",
    "nested/deeper/portrait.mp4": "h264_24_portrait",
    "x:colon.mkv": "av1_25",
    "clip.mp4": "vp9_24_odd",
    "UPPER.MP4": "hevc_30",
    "sound.mp4": "short_30",
}


@pytest.fixture(scope="module")
def compressed(videos, tmp_path_factory):
    base = tmp_path_factory.mktemp("compress")
    src = base / "in"
    for rel, name in TREE.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(videos[name], src / rel)
    _with_audio(videos["short_30"], src / "sound.mp4")
    (src / "notes.txt").write_text("not a video")
    (src / "broken").mkdir()
    (src / "broken" / "corrupt.mp4").write_text("this is text, not a video\n" * 20)
    result = _cli(["--input_root", "in", "--output_root", "out", *FAST], cwd=base)
    return base, result


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return dict(
            codec=s.codec_context.name,
            width=s.width,
            height=s.height,
            rate=s.average_rate,
            audio=len(c.streams.audio),
            format=c.format.name,
            frames=frames,
        )


def test_exit_status_and_failure_summary(compressed):
    base, result = compressed
    assert result.returncode == 1
    assert "1 failed" in result.stderr and "corrupt.mp4" in result.stderr
    assert "FAILED" in result.stderr and "Invalid data" in result.stderr


def test_layout_names_and_no_shell(compressed):
    base, _ = compressed
    out = base / "out"
    produced = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    assert produced == sorted(EXPECTED_OUT)
    assert not list(base.rglob("pwned")) and not (ROOT / "pwned").exists()


@pytest.mark.parametrize("rel", sorted(EXPECTED_OUT))
def test_outputs_geometry_rate_codec(compressed, rel):
    base, _ = compressed
    info = _probe(base / "out" / rel)
    spec = vf.SPECS[EXPECTED_OUT[rel]]
    assert info["codec"] == "h264" and info["audio"] == 0 and info["rate"] == 3
    assert min(info["width"], info["height"]) == 224
    assert info["width"] % 2 == 0 and info["height"] % 2 == 0
    in_aspect, out_aspect = spec.width / spec.height, info["width"] / info["height"]
    assert out_aspect == pytest.approx(in_aspect, abs=2 / 224 * max(in_aspect, 1))
    assert (info["width"] > info["height"]) == (spec.width > spec.height)  # portrait stays portrait
    expected_format = {".mkv": "matroska,webm", ".avi": "avi"}.get(Path(rel).suffix.lower(), "mov,mp4,m4a,3gp,3g2,mj2")
    assert info["format"] == expected_format
    if spec.color is None and rel != "sound.mp4":
        # output frame k is the input frame whose start is nearest to k/3 s
        codes = [vf.read_code(f) for f in info["frames"]]
        nearest = [math.floor(k * spec.fps / 3 + Fraction(1, 2)) for k in range(3 * spec.num_frames)]
        assert codes == [i for i in nearest if i < spec.num_frames]


def test_video_reader_reads_compressed_output(compressed):
    from dataloaders.video_reader import FrameSampling, read_frames_uint8

    base, _ = compressed
    frames, indices = read_frames_uint8(base / "out" / "nested/deeper/portrait.mp4", sampling=FrameSampling())
    assert indices.tolist() == [0, 3, 6, 9, 12]  # 5 s at 3 fps, 1 frame per second
    assert [vf.read_code(f) for f in frames] == [0, 24, 48, 72, 96]


def test_avi_output_has_no_bframes_so_decord_seeks_right(compressed):
    import decord

    base, _ = compressed
    path = base / "out" / "-lead.avi"
    with av.open(str(path)) as c:
        assert {int(f.pict_type) for f in c.decode(video=0)} <= {1, 2}  # AV_PICTURE_TYPE_I, _P: no B
    reader = decord.VideoReader(str(path))
    asked = [3, 9, 14]  # 25 fps input: output frame k shows input round(k * 25 / 3)
    assert [vf.read_code(f) for f in reader.get_batch(asked).asnumpy()] == [25, 75, 117]


def test_rerun_skips_finished_outputs(compressed):
    base, _ = compressed
    out = base / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = _cli(["--input_root", "in", "--output_root", "out", *FAST], cwd=base)
    assert result.returncode == 1
    assert f"{len(EXPECTED_OUT)} already done" in result.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_resumes_after_kill_and_leftovers(videos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        shutil.copy(videos["h264_2997"], src / f"v{i}.mp4")
    out = tmp_path / "out"
    args = ["--input_root", str(src), "--output_root", str(out), "--preset", "ultrafast", "--num_workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "preprocess.compress_video", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    # kill while ffmpeg writes a temporary, after at least one output is finished
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "v0.mp4").exists() and any(out.glob(".v*.partial")):
            break
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)  # ffmpeg children too
    proc.wait()
    # leftovers a crash elsewhere could leave: a stale temp and a junk file at a final name
    out.mkdir(exist_ok=True)
    (out / ".v4.mp4.partial").write_bytes(b"\x00" * 1000)
    (out / "v5.mp4").write_bytes(b"junk")
    manifest = OutputManifest(out.resolve(), src.resolve())
    settings = cv.Settings(preset="ultrafast").output_defining()
    proven = [p for p in out.glob("v*.mp4") if manifest.is_done(src.resolve() / p.name, p.resolve(), settings)]
    assert out / "v0.mp4" in proven
    finished = {p.name: p.stat().st_mtime_ns for p in proven}
    assert cv.main(args) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [MANIFEST_NAME, *(f"v{i}.mp4" for i in range(6))]  # all there, no temporaries
    for i in range(6):
        assert cv.output_is_done(out / f"v{i}.mp4", cv.Settings())
    for name, mtime in finished.items():
        assert (out / name).stat().st_mtime_ns == mtime  # done before the kill: skipped


def test_name_collisions_are_failures(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.webm").write_bytes(b"x")
    (src / "a.mp4").write_bytes(b"x")
    (src / "b.MPEG").write_bytes(b"x")
    jobs, failures = cv.plan_jobs(src, tmp_path / "out")
    assert [j.dst.name for j in jobs] == ["b.mp4"]
    assert sorted(f.job.src.name for f in failures) == ["a.mp4", "a.webm"]
    assert all("several inputs" in f.message for f in failures)


def test_output_inside_input_is_not_walked(tmp_path, videos):
    src = tmp_path / "in"
    (src / "out").mkdir(parents=True)
    shutil.copy(videos["short_30"], src / "a.mp4")
    shutil.copy(videos["short_30"], src / "out" / "old.mp4")
    jobs, failures = cv.plan_jobs(src, src / "out")
    assert [j.src.name for j in jobs] == ["a.mp4"] and not failures


def test_command_is_an_argv_with_file_protocol(tmp_path):
    job = cv.Job(tmp_path / "-x $(y).mp4", tmp_path / "o" / "-x $(y).mp4", "mp4")
    cmd = cv.ffmpeg_command("ffmpeg", job, cv.Settings())
    assert cmd[cmd.index("-i") + 1] == f"file:{job.src.resolve()}"
    assert cmd[-1] == f"file:{job.tmp}" and job.tmp.parent == job.dst.parent
    assert cmd[cmd.index("-c:v") + 1] == "libx264" and "-an" in cmd
    assert cmd[cmd.index("-vf") + 1].startswith("fps=3:round=up,scale=")
    shifted = cv.ffmpeg_command("ffmpeg", job, cv.Settings(), input_fps=25.0)
    assert shifted[shifted.index("-vf") + 1].startswith("settb=AVTB,setpts=PTS-0.020000000/TB,fps=3:round=up,scale=")


def test_rejects_same_input_and_output(tmp_path):
    with pytest.raises(SystemExit):
        cv.parse_args(["--input_root", str(tmp_path), "--output_root", str(tmp_path)])


@pytest.mark.parametrize(
    "name,out,muxer",
    [
        ("a.mp4", "a.mp4", "mp4"),
        ("a.MKV", "a.MKV", "matroska"),
        ("a.avi", "a.avi", "avi"),
        ("a.mov", "a.mov", "mov"),
        ("a.m4v", "a.m4v", "mp4"),
        ("a.flv", "a.flv", "flv"),
        ("a.3gp", "a.3gp", "3gp"),
        ("a.webm", "a.mp4", "mp4"),
        ("a.mpg", "a.mp4", "mp4"),
        ("a.mpeg", "a.mp4", "mp4"),
    ],
)
def test_output_names(tmp_path, name, out, muxer):
    dst, got_muxer = cv.output_path(Path("d") / name, tmp_path)
    assert dst == tmp_path / "d" / out and got_muxer == muxer


def test_compressed_and_raw_sampling_agree(compressed, videos):
    from dataloaders.video_reader import FrameSampling, read_frames_uint8

    base, _ = compressed
    sampling = FrameSampling(max_frames=32)
    raw, _ = read_frames_uint8(videos["h264_2997"], sampling=sampling)
    small, _ = read_frames_uint8(base / "out" / "a b" / "c'd" / HOSTILE, sampling=sampling)
    assert [vf.read_code(f) for f in small] == [vf.read_code(f) for f in raw] == list(range(0, 300, 30))


# ----------------------------------------------------------------------------- proven-complete outputs
def _copies(videos, tmp_path: Path, count: int, *extra: str) -> tuple[Path, Path, list[str]]:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(count):
        shutil.copy(videos["h264_2997"], src / f"v{i}.mp4")
    return src, out, ["--input_root", str(src), "--output_root", str(out), "--preset", "ultrafast", *extra]


def _truncate(path: Path) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    # what the old rule took for a finished output: the index is up front, the first frames decode
    assert cv.output_is_done(path, cv.Settings())


def _drop_manifest_line(out: Path, src_name: str) -> None:
    manifest = out / MANIFEST_NAME
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(line for line in lines if f'"src": "{src_name}"' not in line))


def _touch_source(src: Path) -> None:
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


DAMAGE = {
    "truncated after a finished run": lambda src, out: _truncate(out / "v0.mp4"),
    "truncated, never recorded (another tool, an older run)": lambda src, out: (
        _drop_manifest_line(out, "v0.mp4"),
        _truncate(out / "v0.mp4"),
    ),
    "source changed since": lambda src, out: _touch_source(src / "v0.mp4"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_output_not_proven_complete_is_redone(videos, tmp_path, damage):
    src, out, args = _copies(videos, tmp_path, 2, "--num_workers", "1")
    assert cv.main(args) == 0
    untouched = (out / "v1.mp4").stat().st_mtime_ns
    DAMAGE[damage](src, out)
    assert cv.main(args) == 0
    assert len(_probe(out / "v0.mp4")["frames"]) == 30  # 10 s at 3 fps: whole again
    assert (out / "v1.mp4").stat().st_mtime_ns == untouched  # proven complete: skipped
    redone = (out / "v0.mp4").stat().st_mtime_ns
    assert cv.main(args) == 0  # and now both are proven complete
    assert [(out / f"v{i}.mp4").stat().st_mtime_ns for i in range(2)] == [redone, untouched]


def test_other_settings_redo_the_output(videos, tmp_path):
    src, out, args = _copies(videos, tmp_path, 1)
    assert cv.main(args) == 0
    assert cv.main([*args, "--crf", "30"]) == 0
    assert cv.main([*args, "--crf", "30"]) == 0
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 1 and '"crf": 30' in lines[0]  # superseded line dropped at the third start


def test_manifest_survives_a_torn_last_line(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name in ("a", "b"):
        (src / f"{name}.mp4").write_bytes(b"source " + name.encode())
        (out / f"{name}.mp4").write_bytes(b"output " + name.encode())
    settings = cv.Settings().output_defining()
    manifest = OutputManifest(out, src)
    manifest.record(src / "a.mp4", out / "a.mp4", settings)
    with open(out / MANIFEST_NAME, "a") as handle:
        handle.write('{"src": "b.mp4", "src_si')  # a crash while appending
    reread = OutputManifest(out, src)
    assert reread.is_done(src / "a.mp4", out / "a.mp4", settings)
    assert not reread.is_done(src / "b.mp4", out / "b.mp4", settings)
    reread.compact()
    reread.record(src / "b.mp4", out / "b.mp4", settings)  # not glued onto the torn line
    final = OutputManifest(out, src)
    assert all(final.is_done(src / f"{n}.mp4", out / f"{n}.mp4", settings) for n in ("a", "b"))
    (out / "b.mp4").write_bytes(b"output B")  # same size, other bytes
    assert not final.is_done(src / "b.mp4", out / "b.mp4", settings)


# ----------------------------------------------------------------------------- interrupts
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, PR_SET_PDEATHSIG")


def _endless_ffmpeg(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``ffmpeg`` is the real one reading its input in a loop at real-time
    speed: it never finishes on its own, so every video is "slow" for as long as a test needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ffmpeg"
    wrapper.write_text(f'#!/bin/sh\nexec "{cv.find_ffmpeg()}" -re -stream_loop -1 "$@"\n')
    wrapper.chmod(0o755)
    return {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
    return name, rest[0], int(rest[1])


def _alive(pid: int) -> bool:
    """An ffmpeg process with this pid runs (a zombie waits only for its parent to read its status)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0].startswith("ffmpeg") and stat[1] not in ("Z", "X")


def _ffmpeg_children(parent: int) -> list[int]:
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    stats = ((pid, _proc_stat(pid)) for pid in pids)
    return [pid for pid, st in stats if st and st[0].startswith("ffmpeg") and st[2] == parent and st[1] != "Z"]


def _start_and_wait_for_ffmpeg(videos, tmp_path: Path) -> tuple[subprocess.Popen, list[int], Path, Path]:
    """compress_video on 4 endless videos with 2 workers, once both ffmpeg processes run and
    have opened their temporaries."""
    src, out, args = _copies(videos, tmp_path, 4, "--num_workers", "2")
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "preprocess.compress_video", *args],
            env=_endless_ffmpeg(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        children = _ffmpeg_children(proc.pid)
        if len(children) == 2 and len(list(out.glob(".*.partial"))) == 2:
            return proc, children, out, log
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    pytest.fail(f"no two running ffmpeg processes with temporaries: {log.read_text()}")


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_at_once_and_leaves_nothing(videos, tmp_path, signum):
    proc, children, out, log = _start_and_wait_for_ffmpeg(videos, tmp_path)
    try:
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 128 + signum
    finally:
        proc.kill()
        for pid in children:  # never leave a test's ffmpeg running, whatever happened
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    stderr = log.read_text()
    assert not [pid for pid in children if _alive(pid)]
    assert sorted(p.name for p in out.iterdir()) == []  # no partial, no output, no manifest line
    assert "4 videos: 0 compressed, 0 already done, 0 failed, 4 not done (interrupted)" in stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr


@linux_only
def test_sigkill_of_the_parent_leaves_no_ffmpeg_running(videos, tmp_path):
    proc, children, _, _ = _start_and_wait_for_ffmpeg(videos, tmp_path)
    try:
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.01)
        assert not [pid for pid in children if _alive(pid)]
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
