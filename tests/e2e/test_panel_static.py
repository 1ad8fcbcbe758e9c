"""The panel's static files: compressed for a browser that accepts it, the same bytes as
the files once decompressed, and cacheable (a repeat request with the ETag is a 304)."""

from __future__ import annotations

import gzip

import httpx
import pytest

from tests.e2e.conftest import Api
from urbana.adapters.http.panel.views import HERE

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", ["htmx.min.js", "panel.js", "panel.css"])
def test_static_files_are_gzipped_for_browsers_that_accept_it(api: Api, name: str) -> None:
    url = f"{api.url}/panel/static/{name}"
    on_disk = (HERE / "static" / name).read_bytes()
    # httpx would decompress on its own: read the raw bytes the server sent.
    with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.status_code == 200
        assert zipped.headers["content-encoding"] == "gzip"
        sent = b"".join(zipped.iter_raw())
    assert gzip.decompress(sent) == on_disk
    assert len(sent) < len(on_disk) / 2
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == on_disk


def test_a_browser_keeps_its_copy_of_a_static_file(api: Api) -> None:
    url = f"{api.url}/panel/static/htmx.min.js"
    first = httpx.get(url)
    again = httpx.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
