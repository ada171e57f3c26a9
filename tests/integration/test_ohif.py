"""The OHIF viewer (`@ohif/app` from npm, a built single-page app) against the node's DICOMweb,
in a real headless browser: the viewer's own files are served from a second loopback port with
an app-config.js pointing its DICOMweb data source at the node, it opens a stored MR series and
draws a slice (WebGL on the CPU, SwiftShader). The screenshot is checked for content where the
viewport's canvas is, and the browser's network log for the WADO-RS requests that fed it.

Nothing is fetched at test time: run-tests.sh fills the cache folder with `npm pack` (OHIF_DIST
names another one). Without it, chromium or chromedriver the test skips, saying so; in CI
(CI=true) it fails.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import threading
import time
from contextlib import ExitStack
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image
from pydicom import dcmread
from pynetdicom import AE

from tests.support import RunningNode, free_port, make_config, require, shared_corpus, start_node
from tests.support.browser import SOFTWARE_WEBGL, headless_chromium

OHIF_VERSION = "3.13.2"
OHIF_DIST = Path(
    os.environ.get(
        "OHIF_DIST", Path.home() / ".cache" / "scp-node-tests" / f"ohif-{OHIF_VERSION}" / "package" / "dist"
    )
)
SLICES = 12
WAIT_S = 60
SHOT = Path("/tmp/ohif-shot.png")  # a copy of the last screenshot, to look at after a run

# OHIF 3.13's dist/app-config.js, with its one DICOMweb data source pointed at the node and set
# for what the node does: QIDO includefield, wildcards but no fuzzy matching, WADO-RS frames for
# images and thumbnails, metadata with BulkDataURIs, no static-WADO shortcuts.
# The first-visit tour would cover part of the viewport: marked as seen before the app starts.
APP_CONFIG = """/** @type {AppTypes.Config} */
localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
window.config = {
  name: 'scp-node test',
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'scpnode',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'scpnode',
      configuration: {
        friendlyName: 'scp-node',
        name: 'scpnode',
        wadoUriRoot: %(root)s,
        qidoRoot: %(root)s,
        wadoRoot: %(root)s,
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""


def _ohif_dist() -> Path:
    require(
        (OHIF_DIST / "index.html").is_file(),
        f"OHIF {OHIF_VERSION} is not at {OHIF_DIST} (run-tests.sh fetches it with npm pack "
        f"@ohif/app@{OHIF_VERSION}; OHIF_DIST names another copy)",
    )
    return OHIF_DIST


def _series() -> list[Path]:
    """Neighbouring slices from the middle of a real MR series (sagittal 1 mm MPRAGE)."""
    folder = shared_corpus() / "series" / "mr-siemens-memprage"
    files = sorted(
        folder.iterdir(), key=lambda path: int(dcmread(path, stop_before_pixels=True).InstanceNumber)
    )
    middle = len(files) // 2
    return files[middle - SLICES // 2 : middle + SLICES // 2]


def _store(node: RunningNode, files: list[Path]) -> str:
    """C-STORE `files` (one study), wait for their compression; the Study Instance UID."""
    datasets = [dcmread(path) for path in files]
    ae = AE(ae_title="MODALITY")
    for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    node.wait_for_jobs()
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    assert len(studies) == 1
    return studies.pop()


class _Viewer(SimpleHTTPRequestHandler):
    """OHIF's files, our app-config.js, and index.html for every other path (the SPA's routes)."""

    app_config = b""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.app_config)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(self.app_config)
            return
        if not Path(self.translate_path(path)).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def _serve_viewer(dist: Path, port: int, dicomweb_root: str, stack: ExitStack) -> None:
    """The viewer on loopback `port`, stopped when `stack` closes."""
    config = (APP_CONFIG % {"root": json.dumps(dicomweb_root)}).encode()
    handler = type("Viewer", (_Viewer,), {"app_config": config})
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=str(dist)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif-static", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    stack.callback(stop)


def _responses(driver, seen: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Add the HTTP responses the browser has received since the last call to `seen`."""
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            seen.append((int(response["status"]), response["url"]))
    return seen


def _viewport_middle(driver, shot: Path) -> np.ndarray | None:
    """A screenshot (saved to `shot`) and its pixels in the middle of the largest viewport canvas,
    away from the overlays (patient, series, window, orientation) drawn along its edges."""
    from selenium.webdriver.common.by import By

    png = driver.get_screenshot_as_png()
    shot.write_bytes(png)
    canvases = [
        c for c in driver.find_elements(By.CSS_SELECTOR, "canvas.cornerstone-canvas") if c.is_displayed()
    ]
    if not canvases:
        return None
    box = max((c.rect for c in canvases), key=lambda rect: rect["width"] * rect["height"])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)
    top, left, height, width = (int(box[key]) for key in ("y", "x", "height", "width"))
    return pixels[top + height // 4 : top + 3 * height // 4, left + width // 4 : left + 3 * width // 4]


def _shows_an_image(region: np.ndarray | None) -> bool:
    return region is not None and region.size > 10_000 and region.std() > 8 and len(np.unique(region)) > 32


def _report(answers: list[tuple[int, str]], console: list[dict]) -> str:
    """What the node answered the viewer (frames counted) and what the browser logged."""
    frames = [status for status, url in answers if "/frames/" in url]
    lines = ["node answers:", *(f"  {status} {url}" for status, url in answers if "/frames/" not in url)]
    lines.append(f"  frames requests: {len(frames)}, statuses {sorted(set(frames))}")
    lines += ["browser console:", *(f"  {entry['level']} {entry['message']}" for entry in console)]
    return "\n".join(lines)[:8000]


def test_ohif_opens_a_stored_mr_study_from_the_nodes_dicomweb(tmp_path: Path) -> None:
    dist = _ohif_dist()
    files = _series()
    with ExitStack() as stack:
        viewer_port = free_port()
        viewer = f"http://127.0.0.1:{viewer_port}"
        settings = {"http.anonymous_permissions": ["find", "get"], "http.cors_origins": [viewer]}
        node = start_node(
            make_config(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **settings), http=True
        )
        stack.callback(node.stop)
        study = _store(node, files)
        dicomweb = f"http://127.0.0.1:{node.config.http.port}/dicom-web"
        _serve_viewer(dist, viewer_port, dicomweb, stack)
        driver = headless_chromium(*SOFTWARE_WEBGL, logs=True)
        stack.callback(driver.quit)

        driver.get(f"{viewer}/viewer?StudyInstanceUIDs={study}")
        shot = tmp_path / "ohif.png"
        seen: list[tuple[int, str]] = []
        region = None
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not _shows_an_image(region):
            time.sleep(2)
            _responses(driver, seen)
            region = _viewport_middle(driver, shot)
        shutil.copyfile(shot, SHOT)
        answers = [(status, url) for status, url in _responses(driver, seen) if url.startswith(dicomweb)]
        report = _report(answers, driver.get_log("browser"))
        assert _shows_an_image(region), f"no image in the viewport after {WAIT_S} s (see {SHOT})\n{report}"
        # It came over WADO-RS: the series' metadata, then the pixels as frames.
        assert any(status == 200 and url.endswith("/metadata") for status, url in answers), report
        assert any(status == 200 and "/frames/" in url for status, url in answers), report
        assert all(status < 400 for status, _ in answers), report
