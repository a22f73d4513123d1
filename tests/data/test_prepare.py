"""`llava15 data prepare` end to end against a real HTTP server on 127.0.0.1 started here: tiny
archives for COCO/GQA/TextVQA/VG, a tiny OCR-VQA `dataset.json` with image URLs, and a local Hub
endpoint for the record files. The server's own log is the witness for what was fetched."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from local_servers import COMMIT, LocalServer
from PIL import Image

from llava15.cli import main

REPO = Path(__file__).resolve().parents[2]
MIX = "llava_v1_5_mix665k.json"
INSTRUCT = "liuhaotian/LLaVA-Instruct-150K"


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (40, 30), noise: bool = False) -> bytes:
    if noise:
        img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    else:
        img = Image.new("RGB", size, (seed * 40 % 255, 90, 200 - seed * 20 % 200))
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def record(rid: str, image: str | None, question: str = "What is shown?", answer: str = "A red square.") -> dict:
    rec = {"id": rid, "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + question},
                                        {"from": "gpt", "value": answer}]}
    if image:
        rec["image"] = image
    return rec


class World:
    """The remote side: what each server holds, and the expected counts."""

    def __init__(self) -> None:
        self.server = LocalServer()
        url = self.server.url
        coco = {f"{i:012d}.jpg": image_bytes(i, size=(320, 240), noise=True) for i in (1, 2)}
        self.archives = {
            "coco": ("/zips/train2017.zip", {f"train2017/{n}": d for n, d in coco.items()}),
            "gqa": ("/gqa/images.zip", {"images/2354786.jpg": image_bytes(3)}),
            "textvqa": ("/textvqa/train_val_images.zip", {"train_images/0a0bc91825468c45.jpg": image_bytes(4)}),
            "vg_part1": ("/vg/images.zip", {"VG_100K/1.jpg": image_bytes(5)}),
            "vg_part2": ("/vg/images2.zip", {"VG_100K_2/2.jpg": image_bytes(6)}),
        }
        for path, members in self.archives.values():
            self.server.files[path] = zip_bytes(members)
        self.ocr = {"140031996X": image_bytes(7), "0000000001": image_bytes(8, "PNG")}
        dataset = {
            "140031996X": {"imageURL": f"{url}/images/I/51a.jpg", "questions": ["Who?"], "answers": ["H."], "split": 1},
            "0000000001": {"imageURL": f"{url}/images/I/51b.jpg", "questions": ["Title?"], "answers": ["T"], "split": 1},
            "0000000002": {"imageURL": f"{url}/images/I/dead.jpg", "questions": ["Genre?"], "answers": ["G"], "split": 1},
            "0000000009": {"imageURL": f"{url}/images/I/unused.jpg", "questions": ["?"], "answers": ["!"], "split": 1},
        }
        self.server.files["/images/I/51a.jpg"] = self.ocr["140031996X"]
        self.server.files["/images/I/51b.jpg"] = self.ocr["0000000001"]  # a PNG behind a .jpg URL
        self.server.files["/images/I/unused.jpg"] = image_bytes(9)
        self.server.files["/ocr/dataset.json"] = json.dumps(dataset).encode()
        self.records = [
            record("c1", "coco/train2017/000000000001.jpg"), record("c2", "coco/train2017/000000000002.jpg"),
            record("c3", "coco/train2017/000000000003.jpg"),  # not in the archive: missing
            record("g1", "gqa/images/2354786.jpg"), record("t1", "textvqa/train_images/0a0bc91825468c45.jpg"),
            record("v1", "vg/VG_100K/1.jpg"), record("v2", "vg/VG_100K_2/2.jpg"),
            record("140031996X", "ocr_vqa/images/140031996X.jpg", "Who wrote this book?", "H. Jackson Brown"),
            record("0000000001", "ocr_vqa/images/0000000001.jpg", "What is the title?", "Tiny"),
            record("0000000002", "ocr_vqa/images/0000000002.jpg"),  # dead URL
            record("s1", None, "Give me a tip.", "Sleep well."),
            record("c1b", "coco/train2017/000000000001.jpg", "And now?", "Still a square."),
        ]
        self.records_bytes = json.dumps(self.records, indent=1).encode()
        self.records_sha = self.server.add_hub_file(INSTRUCT, MIX, self.records_bytes)
        self.coco_members = coco

    def args(self, root: Path, *extra: str) -> list[str]:
        mirrors = [f"--mirror={name}={self.server.url}{path}" for name, (path, _) in self.archives.items()]
        return ["data", "prepare", "stage2", "--root", str(root), "--hub-endpoint", self.server.url, *mirrors,
                "--ocr-vqa-json", f"{self.server.url}/ocr/dataset.json", *extra]

    def close(self) -> None:
        self.server.close()


@pytest.fixture(autouse=True)
def _isolated_hub_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One full stage-2 prepare; the record file's first transfer is cut after 100 bytes."""
    world = World()
    root = tmp_path_factory.mktemp("playground") / "data"
    world.server.drop_after[f"/lfs/{world.records_sha}"] = 100
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache_module")))
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(world.args(root, "--jobs", "3"))
    mp.undo()
    yield world, root, code, err.getvalue()
    world.close()


def test_report_counts_are_exact(prepared):
    world, root, code, _ = prepared
    assert code == 0
    report = json.loads((root / "prepare_report.json").read_text())
    sizes = {**{f"coco/train2017/{n}": len(d) for n, d in world.coco_members.items()}}
    sources = report["sources"]
    assert {k: (v["expected"], v["present"], v["missing"]) for k, v in sources.items()} == {
        "coco": (3, 2, 1), "gqa": (1, 1, 0), "ocr_vqa": (3, 2, 1), "textvqa": (1, 1, 0), "vg": (2, 2, 0)}
    assert sources["coco"]["bytes"] == sum(sizes.values())
    assert sources["ocr_vqa"]["bytes"] == sum(len(d) for d in world.ocr.values())
    assert sources["coco"]["missing_examples"] == ["coco/train2017/000000000003.jpg"]
    assert sources["ocr_vqa"]["missing_examples"] == ["ocr_vqa/images/0000000002.jpg"]
    assert report["records"] | {"file": None, "available_file": None} == {
        "file": None, "total": 12, "with_images": 11, "text_only": 1, "available": 10, "dropped": 2,
        "available_file": None}
    assert report["check"]["bad"] == 0
    ocr = report["downloads"]["ocr_vqa"]
    assert (ocr["requested"], ocr["fetched"], ocr["unavailable"]) == (3, 2, 1)
    assert ocr["formats"] == {"jpeg": 1, "png": 1}
    assert ocr["unavailable_examples"] == {"0000000002": "HTTP 404"}
    for name, (_, members) in world.archives.items():
        d = report["downloads"][name]
        assert d["state"] == "fetched" and d["extracted_files"] == len(members) and not d["sha256_checked"]
    assert report["downloads"]["records"]["sha256_checked"]  # the Hub publishes it: checked


def test_images_land_in_the_original_layout_and_archives_are_removed(prepared):
    world, root, _, _ = prepared
    for _, members in world.archives.values():
        for name, data in members.items():
            top = {"train2017": "coco/train2017", "images": "gqa/images", "train_images": "textvqa/train_images",
                   "VG_100K": "vg/VG_100K", "VG_100K_2": "vg/VG_100K_2"}[name.split("/")[0]]
            assert (root / top / name.split("/", 1)[1]).read_bytes() == data
    assert not list(root.rglob("*.zip")) and not list(root.rglob("*.part"))


def test_png_named_jpg_is_kept_under_the_expected_name_and_its_format_recorded(prepared):
    _, root, _, _ = prepared
    png = root / "ocr_vqa/images/0000000001.jpg"
    assert png.read_bytes().startswith(b"\x89PNG")
    manifest = json.loads((root / "ocr_vqa/images/images_manifest.json").read_text())
    assert manifest["formats"] == {"0000000001": "png", "140031996X": "jpeg"}
    assert manifest["unavailable"]["0000000002"]["reason"] == "HTTP 404"
    assert not (root / "ocr_vqa/images/0000000009.jpg").exists()  # not used by the records: not fetched


def test_interrupted_hub_transfer_resumed_without_fetching_bytes_twice(prepared):
    world, root, _, _ = prepared
    gets = world.server.requests(f"/lfs/{world.records_sha}", "GET")
    assert [(g["range"], g["sent"]) for g in gets] == [(None, 100), ("bytes=100-", len(world.records_bytes) - 100)]
    assert (root / MIX).read_bytes() == world.records_bytes


def test_filtered_record_file_keeps_records_byte_for_byte(prepared):
    world, root, _, _ = prepared
    available = json.loads((root / "llava_v1_5_mix665k_available.json").read_text())
    assert [r["id"] for r in available] == [r["id"] for r in world.records if r["id"] not in ("c3", "0000000002")]
    assert available == [r for r in world.records if r["id"] not in ("c3", "0000000002")]


def test_progress_bars_show_sizes_and_eta(prepared):
    _, _, _, stderr = prepared
    assert re.search(r"coco: 100%\|[^\n\r]*\| \d+(\.\d+)?k/\d+(\.\d+)?k \[\d\d:\d\d<\d\d:\d\d", stderr), stderr[-2000:]


def test_rerun_after_completion_fetches_nothing(prepared, capsys):
    world, root, _, _ = prepared
    before = len(world.server.log)
    first = json.loads((root / "prepare_report.json").read_text())
    assert main(world.args(root)) == 0
    assert world.server.log[before:] == []  # not even a HEAD: markers say every item is done
    again = json.loads((root / "prepare_report.json").read_text())
    assert again["sources"] == first["sources"] and again["records"] == first["records"]
    assert {d["state"] for n, d in again["downloads"].items() if n != "ocr_vqa"} == {"done"}


def test_filtered_record_file_trains_with_the_tiny_recipe(prepared, tiny_train_models, tmp_path, caplog):
    _, root, _, _ = prepared
    report = json.loads((root / "prepare_report.json").read_text())
    out = tmp_path / "run"
    overrides = {"model.vision_tower": tiny_train_models["clip"], "model.llm": tiny_train_models["llama"],
                 **report["train_with"], "train.output_dir": out, "train.max_steps": 2, "train.global_batch_size": 2,
                 "train.micro_batch_size": 2, "train.device": "cpu"}
    with caplog.at_level("WARNING", logger="llava15.data"):
        assert main(["train", str(REPO / "recipes/tiny_cpu.yaml"), *[f"{k}={v}" for k, v in overrides.items()]]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(x == x for x in losses)
    assert not [r for r in caplog.records if "skipping record" in r.getMessage()]  # no missing image met


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_killed_download_resumes_from_the_bytes_on_disk(tmp_path):
    """A real process is killed mid-archive; the rerun asks only for the rest (the server's log)."""
    world = World()
    try:
        root = tmp_path / "data"
        coco_path = world.archives["coco"][0]
        size = len(world.server.files[coco_path])
        world.server.stall_after[coco_path] = 50_000
        proc = subprocess.Popen([sys.executable, "-m", "llava15.cli", *world.args(root, "--only", "coco")],
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        part = root / "coco/train2017.zip.part"
        deadline = time.time() + 60
        while not (part.is_file() and part.stat().st_size == 50_000) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        world.server.stall_after.clear()
        world.server.release.set()
        assert main(world.args(root, "--only", "coco")) == 0
        gets = [(g["range"], g["sent"]) for g in world.server.requests(coco_path, "GET")]
        assert gets == [(None, 50_000), ("bytes=50000-", size - 50_000)]
        assert sum(s for _, s in gets) == size
        for name, data in world.coco_members.items():
            assert (root / "coco/train2017" / name).read_bytes() == data
        others = ("/gqa/", "/textvqa/", "/vg/", "/images/I/", "/ocr/")
        assert not [e for e in world.server.log if e["path"].startswith(others)]  # --only coco
        report = json.loads((root / "prepare_report.json").read_text())
        assert report["only"] == ["coco"] and report["sources"]["coco"]["present"] == 2
        assert report["sources"]["gqa"]["missing"] == 1 and report["records"]["available"] == 4  # c1, c2, s1, c1b
    finally:
        world.close()


def test_dry_run_prints_sizes_and_free_disk_and_fetches_nothing(tmp_path, capsys):
    world = World()
    try:
        root = tmp_path / "data"
        assert main(world.args(root, "--only", "coco,gqa", "--dry-run")) == 0
        out = capsys.readouterr().out
        coco = len(world.server.files["/zips/train2017.zip"])
        assert re.search(rf"coco\s+todo\s+{coco / 2**20:.1f} MiB", out), out
        assert re.search(rf"records\s+todo\s+{len(world.records_bytes) / 2**20:.1f} MiB", out), out
        assert "gqa" in out and "textvqa" not in out and "vg_part1" not in out
        assert re.search(r"free under .*: \d+\.\d+ GiB", out)
        assert {e["method"] for e in world.server.log} == {"HEAD"}
        assert not root.exists()
    finally:
        world.close()


def test_disk_space_is_checked_before_anything_is_fetched(tmp_path):
    world = World()
    try:
        world.server.head_size["/zips/train2017.zip"] = 2**60
        with pytest.raises(SystemExit, match=r"needs about .* GiB of disk"):
            main(world.args(tmp_path / "data", "--only", "coco"))
        assert {e["method"] for e in world.server.log} == {"HEAD"}
    finally:
        world.close()


def test_stage1_uses_a_prefilled_hub_cache_and_the_local_hub_endpoint(tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    repo = cache / "datasets--liuhaotian--LLaVA-Pretrain"
    records = [{"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]},
        {"id": "000000001", "image": "00000/000000001.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWrite a brief caption."}, {"from": "gpt", "value": "a tree"}]}]
    (repo / "refs").mkdir(parents=True)
    (repo / "refs/main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    server = LocalServer()
    try:
        images = {"00453/004539375.jpg": image_bytes(1), "00000/000000001.jpg": image_bytes(2)}
        server.add_hub_file("liuhaotian/LLaVA-Pretrain", "images.zip", zip_bytes(images))
        root = tmp_path / "data"
        assert main(["data", "prepare", "stage1", "--root", str(root), "--hub-endpoint", server.url]) == 0
        assert not server.requests("blip_laion")  # the cached file was linked, not fetched
        assert len(server.requests("/lfs/", "GET")) == 1
        for rel, data in images.items():
            assert (root / "LLaVA-Pretrain/images" / rel).read_bytes() == data
        report = json.loads((root / "prepare_report.json").read_text())
        assert report["sources"]["llava_pretrain"] | {"bytes": 0} == {
            "expected": 2, "present": 2, "missing": 0, "unreadable": 0, "bytes": 0, "missing_examples": []}
        assert report["records"]["dropped"] == 0 and report["records"]["available_file"] is None
        assert report["train_with"] == {"data.path": str(root / "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"),
                                        "data.image_folder": str(root / "LLaVA-Pretrain/images")}
    finally:
        server.close()


def test_unknown_source_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(SystemExit, match="unknown source.*llava_pretrain.*known: coco, gqa, ocr_vqa, textvqa, vg"):
        main(["data", "prepare", "stage2", "--root", str(tmp_path), "--only", "coco,llava_pretrain"])


def test_ocr_vqa_fetcher_retries_transient_errors_and_names_what_it_could_not_get(tmp_path):
    from llava15.data.prepare.ocr_vqa import fetch_ocr_vqa

    server = LocalServer()
    try:
        server.files["/a.jpg"] = image_bytes(1)
        server.fail_once["/a.jpg"] = 503
        server.files["/gif.jpg"] = image_bytes(2, "GIF")
        server.files["/pixel.jpg"] = image_bytes(3, "GIF", size=(1, 1))
        server.files["/page.jpg"] = b"<html>moved</html>"
        server.status["/gone.jpg"] = 410
        dataset = {k: {"imageURL": f"{server.url}/{k}.jpg"} for k in ("a", "gif", "pixel", "page", "gone")}
        images = tmp_path / "images"
        result = fetch_ocr_vqa(dataset, images, set(dataset) | {"absent"}, jobs=2, rate=1000, backoff=0.01,
                               quiet=True)
        assert [(e["status"], e["sent"] > 0) for e in server.requests("/a.jpg")] == [(503, True), (200, True)]
        assert (images / "a.jpg").read_bytes() == server.files["/a.jpg"]
        assert (images / "gif.jpg").read_bytes()[:4] == b"GIF8"
        assert result.formats == {"jpeg": 1, "gif": 1}
        reasons = {k: v["reason"] for k, v in result.unavailable.items()}
        assert reasons == {"pixel": "placeholder: a 1x1 gif", "page": "not an image: starts with b'<html>moved</htm'",
                           "gone": "HTTP 410", "absent": "not in dataset.json (no imageURL)"}
        before = len(server.log)
        again = fetch_ocr_vqa(dataset, images, set(dataset) | {"absent"}, rate=1000, quiet=True)
        assert len(server.log) == before  # permanent failures are not asked again
        assert (again.present_before, again.fetched, len(again.unavailable)) == (2, 0, 4)
    finally:
        server.close()


def test_extraction_is_idempotent_and_refuses_paths_outside_the_target(tmp_path):
    from llava15.data.prepare.extract import ExtractError, extract

    members = {f"train2017/{i}.jpg": image_bytes(i) for i in range(4)}
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes(members))
    target = tmp_path / "coco/train2017"
    first = extract(archive, target, quiet=True)
    assert (first.files, first.skipped) == (4, 0)
    (target / "0.jpg").write_bytes(b"trunc")  # e.g. another tool's unzip, interrupted
    (target / "1.jpg").unlink()
    (target / "2.jpg").rename(target / "2.jpg.extracting")  # what our writer leaves when killed mid-file
    (target / "2.jpg.extracting").write_bytes(b"half")
    mtime = (target / "3.jpg").stat().st_mtime_ns
    again = extract(archive, target, quiet=True)
    assert (again.files, again.skipped) == (4, 1)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {n.split("/")[1]: d for n, d in members.items()}
    assert (target / "3.jpg").stat().st_mtime_ns == mtime  # untouched
    evil = tmp_path / "evil.zip"
    evil.write_bytes(zip_bytes({"../outside.jpg": b"x", "ok.jpg": b"y"}))
    with pytest.raises(ExtractError, match="outside the target"):
        extract(evil, tmp_path / "t", quiet=True)
    assert not (tmp_path / "outside.jpg").exists()


def test_interrupted_extraction_resumes_and_data_already_on_disk_is_kept(tmp_path, capsys):
    world = World()
    try:
        root = tmp_path / "data"
        gqa_path, gqa_members = world.archives["gqa"]
        (root / "gqa/images").mkdir(parents=True)
        (root / "gqa/images.zip").write_bytes(world.server.files[gqa_path])  # complete, extraction died
        (root / "gqa/images/2354786.jpg.extracting").write_bytes(b"half")
        (root / "textvqa/train_images").mkdir(parents=True)  # unzipped by hand earlier
        (root / "textvqa/train_images/0a0bc91825468c45.jpg").write_bytes(image_bytes(4))
        assert main(world.args(root, "--only", "gqa,textvqa")) == 0
        out = capsys.readouterr().out
        assert re.search(r"gqa\s+downloaded", out) and re.search(r"textvqa\s+found", out)
        assert not world.server.requests("/gqa/") and not world.server.requests("/textvqa/")
        assert (root / "gqa/images/2354786.jpg").read_bytes() == gqa_members["images/2354786.jpg"]
        assert not (root / "gqa/images.zip").exists() and not list(root.rglob("*.extracting"))
        report = json.loads((root / "prepare_report.json").read_text())
        assert report["downloads"]["textvqa"]["state"] == "found"
        assert report["sources"]["textvqa"]["present"] == 1
        assert main(world.args(root, "--only", "textvqa", "--redo", "textvqa")) == 0
        assert [e["sent"] for e in world.server.requests("/textvqa/", "GET")] == [
            len(world.server.files[world.archives["textvqa"][0]])]
    finally:
        world.close()


def test_ocr_vqa_without_its_dataset_json_is_skipped_and_said_so(tmp_path):
    world = World()
    try:
        root = tmp_path / "data"
        args = [a for a in world.args(root, "--only", "ocr_vqa") if "ocr/dataset.json" not in a and a != "--ocr-vqa-json"]
        assert main(args) == 0
        report = json.loads((root / "prepare_report.json").read_text())
        assert report["downloads"]["ocr_vqa"]["state"] == "needs-input"
        assert "--ocr-vqa-json" in report["downloads"]["ocr_vqa"]["note"]
        assert report["sources"]["ocr_vqa"]["missing"] == 3 and not world.server.requests("/images/I/")
    finally:
        world.close()
