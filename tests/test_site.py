"""The promo page, built from the smoke promo (conftest.py) and opened from disk in headless
Chromium (the distribution's chromium and chromium-driver, which scripts/setup.sh installs).

Expected values come from the files, read here with PyAV and the srt parser: each video's
length, each track's cues, each chapter's start. The page is built with two cuts (the smoke
cut and its title card joined alone), so two players and two chapter lists share the page.
"""

from __future__ import annotations

import os
import shutil
import struct
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

av = pytest.importorskip("av")
srt = pytest.importorskip("srt")
pytest.importorskip("manim")
from selenium import webdriver  # noqa: E402

from promo import site as S  # noqa: E402
from promo.build import finish, join_cut  # noqa: E402
from promo.subtitles import read_chapters_vtt  # noqa: E402
from scenes.cards import closing_figures  # noqa: E402

# the distribution's (scripts/setup.sh --browser): Selenium is handed both, so it downloads none
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WAIT = 20  # seconds any one browser wait may take


def file_duration(path: Path) -> tuple[float, float]:
    """(seconds, one frame) as the container says."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return c.duration / av.time_base, float(1 / (v.guessed_rate or v.average_rate))


def srt_cues(path: Path) -> list[tuple[float, float]]:
    return [(s.start.total_seconds(), s.end.total_seconds())
            for s in srt.parse(path.read_text(encoding="utf-8"))]


class Refs(HTMLParser):
    """Every URL the page names, and the rows of the figures table."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href", "poster") and v is not None]
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None


@pytest.fixture(scope="module")
def built(smoke_promo, tmp_path_factory):
    """Both smoke cuts with their WebM and thumbnail, the scene's card, the real figures, and
    the page written from them."""
    smoke = smoke_promo
    promo = tmp_path_factory.mktemp("site-promo")
    opening = join_cut("opening", "l", smoke.cut.parts[:1], promo, "opening-480p15",
                       log=lambda *_: None)
    for cut in (opening, smoke.cut):
        if cut.webm is None:
            finish(cut, webm=True, log=lambda *_: None)
        for f in (cut.mp4, cut.webm, cut.srt, cut.vtt, cut.thumbnail):
            if f.parent != promo:
                shutil.copy(f, promo / f.name)
    cuts = [S.cut_page(promo, "opening-480p15", "Opening alone"),
            S.cut_page(promo, "smoke-480p15", "The smoke cut")]
    scene = smoke.cut.parts[-1]
    cards = [S.scene_card(scene.part, scene.mp4)]
    figures = closing_figures()
    out = tmp_path_factory.mktemp("site") / "site"
    index = S.write_site(cuts, cards, figures, out)
    return index, promo, cuts, cards, figures


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromium-driver are not installed: scripts/setup.sh --browser")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
              "--window-size=1280,800", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_script_timeout(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(built, browser):
    index = built[0]
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": 800, "deviceScaleFactor": 1,
                             "mobile": False})
    browser.get(index.as_uri())
    return browser


def expected_tracks(built) -> dict[str, tuple[Path, Path | None]]:
    """video id -> (its .srt, its .chapters.vtt or None), from the files."""
    index, _, cuts, cards, _ = built
    out = {c.key: (index.parent / c.srt.name, index.parent / c.chapters_vtt.name) for c in cuts}
    out.update({f"scene-{i}": (c.srt, None) for i, c in enumerate(cards, 1)})
    return out


# ---- the folder -------------------------------------------------------------------------------


def test_the_page_names_only_files_inside_its_folder(built):
    index = built[0]
    refs = Refs()
    refs.feed(index.read_text(encoding="utf-8"))
    assert refs.urls
    site = index.parent.resolve()
    for url in refs.urls:
        if url.startswith("data:"):
            continue
        assert ":" not in url and not url.startswith(("/", "//")), url  # nothing from elsewhere
        f = (index.parent / url).resolve()
        assert f.is_relative_to(site) and f.is_file() and not f.is_symlink(), url
    # every cut: both encodings, the poster, subtitles in both formats, the chapters
    for cut in built[2]:
        stem = cut.mp4.path.stem
        for name in (f"{stem}.webm", f"{stem}.mp4", f"{stem}.png", f"{stem}.vtt", f"{stem}.srt",
                     f"{stem}.chapters.vtt"):
            assert name in refs.urls, name


def test_the_figures_table_holds_each_figure_and_its_call(built):
    figures = built[4]
    refs = Refs()
    refs.feed(built[0].read_text(encoding="utf-8"))
    rows = [r for r in refs.rows if r]
    assert figures and len(rows) == len(figures)
    for row, f in zip(rows, figures):
        assert row == [f.headline, f.detail, f.source.removeprefix("from ")]
        assert row[2].startswith("astrai.compare.")


def test_each_scene_card_has_its_still_sentence_length_and_clip(built):
    index, _, _, cards, _ = built
    page = index.read_text(encoding="utf-8")
    for card in cards:
        assert escape(card.summary) in page and escape(card.chapter) in page
        clip = index.parent / "scenes" / f"{card.cls}.mp4"
        assert clip.samefile(card.clip.path) or clip.read_bytes() == card.clip.path.read_bytes()
        still = index.parent / "scenes" / f"{card.cls}.png"
        w, h = struct.unpack(">II", still.read_bytes()[16:24])  # the PNG's IHDR
        assert (w, h) == (card.clip.width, card.clip.height)
        seconds, _ = file_duration(clip)
        assert S.clock(seconds) in page


def test_a_missing_or_stale_file_is_a_named_error(built, tmp_path, capsys):
    _, promo, cuts, _, _ = built
    stem = cuts[1].mp4.path.stem
    for suffix in (".webm", ".srt", ".chapters.vtt", ".png", ".mp4"):
        d = tmp_path / suffix.strip(".")
        shutil.copytree(promo, d)
        (d / f"{stem}{suffix}").unlink()
        with pytest.raises(S.SiteError, match=f"{stem}{suffix}.*missing"):
            S.cut_page(d, stem, "x")
    d = tmp_path / "garbled"
    shutil.copytree(promo, d)
    (d / f"{stem}.srt").write_text("1\nnot a time\nhello\n")
    with pytest.raises(S.SiteError, match=f"{stem}.srt: not a readable track"):
        S.cut_page(d, stem, "x")
    d = tmp_path / "stale"
    shutil.copytree(promo, d)
    shutil.copy(d / "opening-480p15.webm", d / f"{stem}.webm")  # another cut's WebM
    with pytest.raises(S.SiteError, match="stale"):
        S.cut_page(d, stem, "x")
    # the command: one line naming the file, exit 1, and no page written
    out = tmp_path / "site"
    assert S.main(["--promo", str(tmp_path / "webm"), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("site: FAILED:") and "teaser-480p15.mp4" in err
    assert not out.exists()


def test_the_command_reads_both_cuts_and_every_storyboard_scene(built, smoke_promo, tmp_path,
                                                                capsys):
    """`python -m promo.site` on a promo folder laid out as `make promo` leaves it (the smoke
    files under the teaser's and explainer's names, the smoke scene as every scene's render)."""
    from promo.build import TITLES
    from promo.parts import plan
    from promo.render import output_of
    from scenes.cards import scene_class

    _, smoke_dir, _, _, _ = built
    promo = tmp_path / "promo"
    promo.mkdir()
    for name in ("teaser-480p15", "explainer-480p15"):
        for f in smoke_dir.glob("smoke-480p15.*"):
            shutil.copy(f, promo / f.name.replace("smoke-480p15", name))
    scene = smoke_promo.cut.parts[-1]
    parts = [p for p in plan("full", log=lambda *_: None) if p.cls.endswith("Scene")]
    for part in parts:
        mp4 = output_of(promo / "build", "l", part)
        mp4.parent.mkdir(parents=True)
        shutil.copy(scene.mp4, mp4)
        shutil.copy(scene.srt, mp4.with_suffix(".srt"))
    out = tmp_path / "site"
    assert S.main(["--promo", str(promo), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"site: {out / 'index.html'}")
    page = (out / "index.html").read_text(encoding="utf-8")
    heads = [page.index(f'<h2 id="{k}-h">{TITLES[c]} ') for k, c in (("teaser", "teaser"),
                                                                     ("explainer", "full"))]
    assert heads == sorted(heads)  # the short one first
    for part in parts:
        cls = scene_class(f"{part.file.removesuffix('.py').replace('/', '.')}:{part.cls}")
        assert escape(cls.SUMMARY) in page and (out / "scenes" / f"{part.cls}.mp4").is_file()
    assert page.count('<article class="scene">') == len(parts) >= 6


def test_a_folder_the_page_did_not_write_is_never_replaced(built, tmp_path):
    _, _, cuts, cards, figures = built
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(S.SiteRefused, match="did not write"):
        S.write_site(cuts, cards, figures, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_page_it_wrote_is_rebuilt_and_a_note_put_in_it_stops_the_next_build(built, tmp_path):
    _, _, cuts, cards, figures = built
    out = tmp_path / "site"
    S.write_site(cuts, cards, figures, out)
    first = sorted(p.relative_to(out) for p in out.rglob("*"))
    S.write_site(cuts, cards, figures, out)  # its own folder: replaced whole
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == first
    (out / "notes.txt").write_text("mine")
    with pytest.raises(S.SiteRefused, match="holds notes.txt, which this program did not"):
        S.write_site(cuts, cards, figures, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(
        first + [Path("notes.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


# ---- what --out may be, and what the page may publish (no promo needed) ------------------------


def run_site(capsys, *argv) -> tuple[int, str]:
    rc = S.main(list(argv))
    return rc, capsys.readouterr().err


def test_an_out_that_holds_a_page_and_user_files_is_refused_with_exit_2(tmp_path, capsys):
    """The old build deleted such a folder whole, and a sibling DIR.new with it."""
    out, sibling = tmp_path / "site", tmp_path / "site.new"
    for d in (out, sibling):
        d.mkdir()
        (d / "index.html").write_text("an old page")
        (d / "notes.txt").write_text("mine")
    rc, err = run_site(capsys, "--promo", str(tmp_path / "nothing"), "--out", str(out))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("site: FAILED: ")
    assert str(out) in err and "did not write" in err
    for d in (out, sibling):
        assert sorted(p.name for p in d.iterdir()) == ["index.html", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "site.new"]


@pytest.mark.parametrize("make,words", [
    (lambda p: p.write_text("my notes"), "is a file, not a folder"),
    (lambda p: p.symlink_to(p.parent / "elsewhere", target_is_directory=True),
     "is a symbolic link"),
    (lambda p: p.symlink_to(p.parent / "elsewhere" / "f"), "is a symbolic link"),
])
def test_an_out_that_is_a_file_or_symlink_is_refused_and_nothing_is_left(tmp_path, capsys, make,
                                                                         words):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f").write_text("theirs")
    out = tmp_path / "site"
    make(out)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc, err = run_site(capsys, "--promo", str(tmp_path / "nothing"), "--out", str(out))
    assert rc == 2 and err.count("\n") == 1 and words in err and str(out) in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "elsewhere" / "f").read_text() == "theirs"


def test_the_license_is_copied_when_the_repository_has_one(tmp_path):
    (tmp_path / "LICENSE").write_text("\nMIT License\n\nCopyright ...\n")
    out = tmp_path / "out"
    out.mkdir()
    assert "MIT License" in S.license_html(tmp_path, out)
    assert (out / "LICENSE.txt").read_text().startswith("\nMIT License")
    assert not (out / "LICENSE.txt").samefile(tmp_path / "LICENSE")  # its own copy


@pytest.mark.parametrize("make,words", [
    (lambda p, private: p.symlink_to(private), "is a symbolic link"),
    (lambda p, private: os.mkfifo(p), "not a regular file"),
    (lambda p, private: p.write_bytes(b"\x89PNG\0\0"), "binary"),
])
def test_a_license_that_is_not_a_regular_text_file_of_the_repository_is_refused(tmp_path, make,
                                                                                 words):
    """A LICENSE linking to a private file outside was hard-linked beside the page and its
    first line shown."""
    repo, out = tmp_path / "repo", tmp_path / "out"
    repo.mkdir()
    out.mkdir()
    private = tmp_path / "private.txt"
    private.write_text("my password\n")
    private.chmod(0o600)
    make(repo / "LICENSE", private)
    with pytest.raises(S.SiteRefused, match=words) as info:
        S.license_html(repo, out)
    assert "LICENSE" in str(info.value) and "\n" not in str(info.value)
    assert "password" not in str(info.value) and list(out.iterdir()) == []


def media(width: int = 64, height: int = 48) -> S.Media:
    return S.Media(Path("v.mp4"), 1.0, 15.0, width, height, "video/mp4")


def test_a_poster_that_is_not_a_png_of_the_video_size_is_a_named_error(tmp_path):
    from PIL import Image

    poster = tmp_path / "cut.png"
    Image.new("RGB", (64, 48)).save(poster)
    assert S.poster_of(poster, media(), "the cut") == poster
    cases = [(lambda p: p.write_text("not an image at all"), "is not an image"),
             (lambda p: p.write_bytes(poster.read_bytes()[:40]), "is not an image"),
             (lambda p: Image.new("RGB", (64, 48)).save(p, format="JPEG"), "JPEG image, not"),
             (lambda p: Image.new("RGB", (32, 48)).save(p, format="PNG"), "32x48, the video"),
             (lambda p: p.mkdir(), "not a regular file"),
             (lambda p: p.symlink_to(poster), "symbolic link")]
    for i, (make, words) in enumerate(cases):
        bad = tmp_path / f"bad{i}.png"
        make(bad)
        with pytest.raises(S.SiteError, match=words) as info:
            S.poster_of(bad, media(), "the cut's thumbnail")
        assert "\n" not in str(info.value) and bad.name in str(info.value)


def test_every_file_the_page_publishes_must_be_a_regular_file(tmp_path):
    private = tmp_path / "private.mp4"
    private.write_text("mine")
    private.chmod(0o600)
    link = tmp_path / "cut.webm"
    link.symlink_to(private)
    with pytest.raises(S.SiteRefused, match="cut.webm is a symbolic link"):
        S.need(link, "the cut")
    with pytest.raises(S.SiteError, match="missing"):
        S.need(tmp_path / "gone.mp4", "the cut")


# ---- in the browser ---------------------------------------------------------------------------

LOAD = """
const [url, done] = [arguments[0], arguments[arguments.length - 1]];
const v = document.createElement("video");
v.muted = true; v.preload = "auto";
v.addEventListener("loadeddata", () => done([v.readyState, v.duration, null]));
v.addEventListener("error", () => done([v.readyState, v.duration, v.error.code]));
v.src = url;
"""


def test_every_video_plays_each_source_for_its_files_length(page, built):
    videos = page.execute_script(
        "return [...document.querySelectorAll('video')].map(v => [v.id, "
        "[...v.querySelectorAll('source')].map(s => [s.src, s.type])])")
    assert len(videos) == len(built[2]) + len(built[3])
    for vid, sources in videos:
        assert sources, vid
        if not vid.startswith("scene-"):
            assert [t.split(";")[0] for _, t in sources] == ["video/webm", "video/mp4"], vid
        for url, kind in sources:
            assert page.execute_script("return document.createElement('video')"
                                       ".canPlayType(arguments[0])", kind) == "probably", kind
            ready, duration, error = page.execute_async_script(LOAD, url)
            want, frame = file_duration(Path(unquote(urlparse(url).path)))
            assert error is None and ready >= 2, (url, ready, error)
            assert abs(duration - want) <= frame, (url, duration, want)
    # the page's own players pick the WebM, their first source
    picked = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const vs = [...document.querySelectorAll('video[preload="metadata"]')];
        const wait = v => v.readyState >= 1 ? Promise.resolve() :
            new Promise(r => v.addEventListener("loadedmetadata", r, {once: true}));
        Promise.all(vs.map(wait)).then(() => done(vs.map(v => v.currentSrc)));""")
    assert picked and all(u.endswith(".webm") for u in picked), picked


def test_every_track_loads_the_cues_of_its_file(page, built):
    tracks = page.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const els = [...document.querySelectorAll('track')];
        els.forEach(t => { t.track.mode = "hidden"; });   // load every track, chapters too
        const loaded = t => t.readyState >= 2 ? Promise.resolve() : new Promise(r => {
            t.addEventListener("load", r, {once: true});
            t.addEventListener("error", r, {once: true}); });
        Promise.all(els.map(loaded)).then(() => done(els.map(t => [
            t.parentElement.id, t.kind, t.readyState,
            [...t.track.cues].map(c => [c.startTime, c.endTime, c.text])])));""")
    want = expected_tracks(built)
    seen = set()
    for vid, kind, ready, cues in tracks:
        assert ready == 2, (vid, kind)  # LOADED, not ERROR
        srt_path, chapters_path = want[vid]
        if kind == "subtitles":
            expected = srt_cues(srt_path)
            assert len(cues) == len(expected), (vid, len(cues), len(expected))
            for got, exp in ((cues[0], expected[0]), (cues[-1], expected[-1])):
                assert abs(got[0] - exp[0]) < 1e-3 and abs(got[1] - exp[1]) < 1e-3, vid
        else:
            assert kind == "chapters"
            chapters = read_chapters_vtt(chapters_path)
            assert [(round(a, 3), t) for a, _, t in cues] == \
                [(round(c.start, 3), c.title) for c in chapters]
        seen.add((vid, kind))
    for vid, (_, chapters_path) in want.items():
        assert (vid, "subtitles") in seen
        assert chapters_path is None or (vid, "chapters") in seen


# Arm a listener that keeps where the next seek goes (currentTime while seeking), then wait
# for it: the click's own effect, before playback moves on.
ARM = """
const v = document.getElementById(arguments[0]);
window.seekedTo = null;
v.addEventListener("seeking", () => { window.seekedTo = v.currentTime; }, {once: true});
"""
SEEKED = """
const done = arguments[arguments.length - 1];
const poll = () => window.seekedTo === null ? setTimeout(poll, 20) : done(window.seekedTo);
poll();
"""
METADATA = """
const [v, done] = [document.getElementById(arguments[0]), arguments[arguments.length - 1]];
if (v.readyState >= 1) done(); else v.addEventListener("loadedmetadata", () => done());
"""


def test_clicking_a_chapter_seeks_to_its_start_and_marks_it(page, built):
    from selenium.webdriver.common.by import By

    for cut in built[2]:
        chapters = read_chapters_vtt(cut.chapters_vtt)
        buttons = page.find_elements(By.CSS_SELECTOR, f'ol[data-video="{cut.key}"] button')
        assert [b.text.split(" ", 1)[1] for b in buttons] == [c.title for c in chapters]
        page.execute_async_script(METADATA, cut.key)  # seeking needs the video's length
        for b, ch in list(zip(buttons, chapters))[::-1]:  # the last first: a real jump
            page.execute_script(ARM, cut.key)
            b.click()
            got = page.execute_async_script(SEEKED)
            assert abs(got - ch.start) < 1e-3, (cut.key, ch.title, got)
            marked = page.find_elements(By.CSS_SELECTOR,
                                        f'ol[data-video="{cut.key}"] [aria-current="true"]')
            assert [m.text for m in marked] == [b.text]
        page.execute_script("document.getElementById(arguments[0]).pause()", cut.key)


def test_screenshot_at_1280x800_with_chapters_beside_the_video(page, built):
    index = built[0]
    page.get(index.as_uri())  # as a visitor first sees it: posters, nothing played yet
    box = page.execute_script("""
        const v = document.querySelector('.player video').getBoundingClientRect();
        const n = document.querySelector('.player nav').getBoundingClientRect();
        return [v.left, v.right, v.top, v.bottom, n.left, n.top, innerWidth, innerHeight];""")
    vl, vr, vt, vb, nl, nt, w, h = box
    assert (w, h) == (1280, 800)
    assert nl >= vr and abs(nt - vt) < 2  # the chapter list beside the video, level with it
    assert vb <= h  # the first video is on screen whole
    shot = index.parent / "screenshot.png"
    page.save_screenshot(str(shot))
    assert struct.unpack(">II", shot.read_bytes()[16:24]) == (1280, 800)


def test_no_console_errors(page):  # last: everything above ran in this page
    severe = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_clean_removes_only_a_page_folder_it_wrote(tmp_path, capsys):
    from astrai.folders import new_folder

    out = tmp_path / "site"
    with new_folder(out, S.SiteRefused) as tmp:
        (tmp / "index.html").write_text("page")
    assert run_site(capsys, "--clean", "--out", str(out)) == (0, "")
    assert not out.exists()
    assert run_site(capsys, "--clean", "--out", str(out)) == (0, "")  # nothing there: done
    for make in (lambda p: p.mkdir(), lambda p: p.write_text("notes")):
        make(out)
        rc, err = run_site(capsys, "--clean", "--out", str(out))
        assert rc == 2 and str(out) in err and err.count("\n") == 1 and out.exists()
        shutil.rmtree(out) if out.is_dir() else out.unlink()


def test_the_page_names_the_model_of_the_runs_and_its_license(tmp_path):
    """A named model's license comes from its registry entry; the seeded tiny model is said
    to be one; a run with a checkpoint folder of its own points at that folder's license."""
    from astrai.errors import ModelNotInstalled
    from astrai.models import MODELS

    named = next(iter(MODELS.values()))
    wl = tmp_path / "named.toml"
    wl.write_text(f'name = "named"\n[cache]\nn_pages = 8\npage_size = 16\n[model]\n'
                  f'checkpoint = "{named.name}"\n[[request]]\nname = "A"\nprompt_len = 4\n'
                  f'max_new_tokens = 2\n')
    try:
        html = S.models_html([str(wl)])
    except ModelNotInstalled as e:  # set-up installs it; a bare checkout may not have it
        pytest.skip(str(e))
    assert escape(named.title) in html and escape(named.license) in html
    assert "random weights" not in html
    assert "random weights" in S.models_html(["batching"])  # a workload of the tiny model
    mixed = S.models_html(["batching", str(wl)])
    assert "A model in these runs" in mixed and "Some runs use" in mixed
