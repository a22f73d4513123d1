"""What each training stage needs, where it comes from, and where it goes under the data root.

The layout is the original's (`playground/data`): stage 1 reads `LLaVA-Pretrain/blip_laion_cc_sbu_558k.json`
with images under `LLaVA-Pretrain/images`; stage 2 reads `llava_v1_5_mix665k.json` with images under the
root itself (`coco/train2017`, `gqa/images`, `ocr_vqa/images`, `textvqa/train_images`, `vg/VG_100K`,
`vg/VG_100K_2`). Hub repositories and file names are the ones the original README links; the archive
URLs are those its "Visual Instruction Tuning" data section links. No source publishes a checksum or a
size we could pin here (`sha256`/`size` stay None): the Hub's own sha256 (its LFS etag) is checked
instead, and sizes come from the servers at run time (`--dry-run` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face dataset repository, downloaded to `dest` (relative to the data root)."""

    name: str
    source: str
    repo_id: str
    filename: str
    dest: str
    extract_to: str | None = None
    """For an archive: the folder its images go to (relative to the root); None for a plain file."""
    revision: str = "main"


@dataclass(frozen=True)
class UrlFile:
    """An archive on a project's web site, fetched over HTTP(S) with `Range` resume."""

    name: str
    source: str
    url: str
    dest: str
    extract_to: str | None = None
    sha256: str | None = None
    size: int | None = None
    homepage: str = ""


@dataclass(frozen=True)
class OcrVqaImages:
    """OCR-VQA: a `dataset.json` of `{id: {"imageURL": ...}}` fetched image by image into `images_dir`,
    each saved as `<id>.jpg` whatever its real format (the name the record file uses)."""

    name: str = "ocr_vqa"
    source: str = "ocr_vqa"
    dataset_json: str = "ocr_vqa/dataset.json"
    images_dir: str = "ocr_vqa/images"
    dataset_json_url: str | None = None
    """Where to fetch `dataset.json` from; the original distributes it in a Google Drive folder (no
    direct URL), so the user passes `--ocr-vqa-json URL|PATH` or places the file at `dataset_json`."""


Item = HubFile | UrlFile | OcrVqaImages


@dataclass(frozen=True)
class Stage:
    name: str
    records: HubFile
    image_root: str
    """The folder record image paths are relative to (`data.image_folder`), relative to the data root."""
    items: tuple[Item, ...]
    prefixes: dict[str, str] = field(default_factory=dict)
    """Image-path prefix (relative to `image_root`) -> source name, for the per-source report."""

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(item.source for item in self.items))

    def source_of(self, image: str) -> str:
        for prefix, source in self.prefixes.items():
            if image.startswith(prefix):
                return source
        return "other"


STAGE1 = Stage(
    name="stage1",
    records=HubFile("records", "records", "liuhaotian/LLaVA-Pretrain", "blip_laion_cc_sbu_558k.json",
                    "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"),
    image_root="LLaVA-Pretrain/images",
    items=(HubFile("llava_pretrain", "llava_pretrain", "liuhaotian/LLaVA-Pretrain", "images.zip",
                   "LLaVA-Pretrain/images.zip", extract_to="LLaVA-Pretrain/images"),),
    prefixes={"": "llava_pretrain"},
)

VG_HOME = "https://homes.cs.washington.edu/~ranjay/visualgenome"
STAGE2 = Stage(
    name="stage2",
    records=HubFile("records", "records", "liuhaotian/LLaVA-Instruct-150K", "llava_v1_5_mix665k.json",
                    "llava_v1_5_mix665k.json"),
    image_root=".",
    items=(
        UrlFile("coco", "coco", "http://images.cocodataset.org/zips/train2017.zip", "coco/train2017.zip",
                extract_to="coco/train2017", homepage="https://cocodataset.org"),
        UrlFile("gqa", "gqa", "https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip", "gqa/images.zip",
                extract_to="gqa/images", homepage="https://cs.stanford.edu/people/dorarad/gqa"),
        OcrVqaImages(),
        UrlFile("textvqa", "textvqa", "https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip",
                "textvqa/train_val_images.zip", extract_to="textvqa/train_images",
                homepage="https://textvqa.org"),
        UrlFile("vg_part1", "vg", "https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip",
                "vg/images.zip", extract_to="vg/VG_100K", homepage=VG_HOME),
        UrlFile("vg_part2", "vg", "https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip",
                "vg/images2.zip", extract_to="vg/VG_100K_2", homepage=VG_HOME),
    ),
    prefixes={"coco/": "coco", "gqa/": "gqa", "ocr_vqa/": "ocr_vqa", "textvqa/": "textvqa", "vg/": "vg"},
)

STAGES = {"stage1": STAGE1, "stage2": STAGE2}


def select(stage: str, only: list[str] | None = None, mirrors: dict[str, str] | None = None,
           ocr_vqa_json: str | None = None) -> tuple[Stage, list[Item]]:
    """The stage and the items to fetch: `only` names sources (`coco,gqa`), `mirrors` maps an item name
    to another URL (archives only: Hub files follow `--hub-endpoint`)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    st = STAGES[stage]
    wanted = set(only or st.sources)
    unknown = wanted - set(st.sources)
    if unknown:
        raise ValueError(f"--only: unknown source(s) {', '.join(sorted(unknown))} for {stage}; "
                         f"known: {', '.join(st.sources)}")
    mirrors = dict(mirrors or {})
    names = {item.name for item in st.items if isinstance(item, UrlFile)}
    bad = set(mirrors) - names
    if bad:
        raise ValueError(f"--mirror: unknown archive(s) {', '.join(sorted(bad))} for {stage}; "
                         f"known: {', '.join(sorted(names))}")
    items: list[Item] = []
    for item in st.items:
        if item.source not in wanted:
            continue
        if isinstance(item, UrlFile) and item.name in mirrors:
            item = replace(item, url=mirrors[item.name])
        if isinstance(item, OcrVqaImages) and ocr_vqa_json:
            item = replace(item, dataset_json_url=ocr_vqa_json)
        items.append(item)
    return st, items
