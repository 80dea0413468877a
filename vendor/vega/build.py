"""Build .dvc/plots.html, the page template `dvc plots show` and `dvc plots diff` fill in, with the
chart libraries inside it, so that their pages draw with no network (DVC's own page loads Vega
from a CDN, and its charts stay blank offline).

    cd /tmp && npm pack vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
    python vendor/vega/build.py /tmp/vega-5.33.1.tgz /tmp/vega-lite-5.23.0.tgz /tmp/vega-embed-6.29.0.tgz

Each library is BSD-3-Clause (their licences beside this file; vega's npm package carries none, and
its repository's is that of the same lab, LICENSE-vega). The template calls vegaEmbed with the SVG
renderer: the charts' text (the models' names, the axes) is then part of the page, which a test
reads in a headless Chromium.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = ("package/build/vega.min.js", "package/build/vega-lite.min.js", "package/build/vega-embed.min.js")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots</title>
    <!-- {versions}, BSD-3-Clause (vendor/vega/LICENSE-*): inlined, so that the charts draw offline -->
{libraries}
    <script>
        // DVC's page calls vegaEmbed(element, spec) for each chart: draw as SVG, without the action menu
        window.vegaEmbed = (function (embed) {{
            return function (element, spec, options) {{
                return embed(element, spec, Object.assign({{renderer: "svg", actions: false}}, options || {{}}));
            }};
        }})(window.vegaEmbed);
    </script>
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def main(tarballs: list[str]) -> None:
    scripts, versions = [], []
    for tarball, member in zip(tarballs, FILES):
        with tarfile.open(tarball) as archive:
            code = archive.extractfile(member).read().decode()
            name = Path(tarball).name.removesuffix(".tgz")
        if "</script" in code:
            raise SystemExit(f"{name} holds '</script': it cannot be inlined as is")
        scripts.append(f"    <script>/* {name} */\n{code}\n    </script>")
        versions.append(name)
    page = PAGE.format(
        refresh_tag="{refresh_tag}", plot_divs="{plot_divs}", versions=", ".join(versions), libraries="\n".join(scripts)
    )
    (ROOT / ".dvc" / "plots.html").write_text(page)


if __name__ == "__main__":
    main(sys.argv[1:])
