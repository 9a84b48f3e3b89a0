"""The project's docs stand on their own: every link and every named file of the repository is
there, the benchmark folder holds what the README says it holds, and the demo's ports can be moved
as the README says."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_link_lands_in_the_repository():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to {target}, which is not here"


def test_no_doc_cites_a_file_the_repository_does_not_have():
    for doc in DOCS:
        # DESIGN.md, NOTES.md, MODEL_CARD.md, src/vov/weights/LICENSES.md: a path is taken as written
        for folder, name in re.findall(r"((?:[\w.-]+/)*)\b([A-Z][A-Z_]+\.md)\b", doc.read_text()):
            places = [ROOT / folder / name] if folder else [ROOT / name, ROOT / "docs" / name]
            assert any(p.exists() for p in places), f"{doc.relative_to(ROOT)} cites {folder}{name}"


def test_the_readme_names_only_what_the_benchmark_folder_holds():
    readme = ROOT / "README.md"
    results = ROOT / "bench" / "results" / "rd"
    text = " ".join(readme.read_text().split())
    said = text[text.index("its tables are in `bench/results/rd/`"):][:260]
    for name in re.findall(r"`([\w.]+\.(?:txt|json))`", said):
        assert (results / name).exists(), name
    assert "not committed" in said or (results / "report.html").exists()


def test_the_readme_says_how_to_move_the_demos_ports():
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    readme = (ROOT / "README.md").read_text()
    for variable in ("VOV_DEMO_ENCODER_PORT", "VOV_DEMO_DECODER_PORT", "VOV_DEMO_TRITON_PORTS"):
        assert variable in demo and variable in readme
