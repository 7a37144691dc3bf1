"""Known-bad lists in the formats operators receive them: PDQ hex, ThreatExchange /
HMA CSV and TSV, folders of images, and livemod's old 16-hex pHash files."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from livemod.errors import ConfigError
from livemod.testing.media import photo
from livemod.vision import pdq
from livemod.vision.hashes import phash
from livemod.vision.hashlists import ListSpec, load_list
from livemod.vision.regions import CAPTION_CUTS, CROPS

PHOTOS = ["astronaut", "camera", "chelsea", "coffee"]


def hexes() -> dict[str, str]:
    return {name: pdq.pdq(photo(name)).hex() for name in PHOTOS}


def spec(*paths: Path, name: str = "t") -> ListSpec:
    return ListSpec(name, tuple(paths))


def test_pdq_hex_file_with_labels_comments_and_a_byte_order_mark(tmp_path: Path) -> None:
    h = hexes()
    path = tmp_path / "list.pdq"
    body = "# exported\n\n" + f"{h['camera']} camera one\n{h['coffee'].upper()}\n"
    path.write_text("\ufeff" + body, encoding="utf-8")
    loaded = load_list(spec(path))
    assert loaded.labels == ("camera one", "list.pdq:4")
    assert [pdq.to_hex(w) for w in loaded.pdq] == [h["camera"], h["coffee"]]


def test_hma_csv_export_keeps_pdq_rows_and_skips_other_signal_types(tmp_path: Path) -> None:
    h = hexes()
    path = tmp_path / "bank.csv"
    path.write_text(
        "signal_type,signal_value,bank_content_id,tags\n"
        f"pdq,{h['chelsea']},1001,cat\n"
        "md5,d41d8cd98f00b204e9800998ecf8427e,1002,\n"
        f"pdq,{h['astronaut']},,\n",
        encoding="utf-8",
    )
    loaded = load_list(spec(path))
    assert loaded.labels == ("1001", "bank.csv:4")
    assert pdq.to_hex(loaded.pdq[0]) == h["chelsea"]


def test_threatexchange_tsv_and_headerless_csv(tmp_path: Path) -> None:
    h = hexes()
    tsv = tmp_path / "te.tsv"
    tsv.write_text(f"hash\tindicator_id\n{h['coffee']}\t5551\n", encoding="utf-8")
    bare = tmp_path / "bare.csv"
    bare.write_text(f"{h['camera']},photo-7\n", encoding="utf-8")
    loaded = load_list(spec(tsv, bare))
    assert loaded.labels == ("5551", "photo-7")


def test_old_phash_files_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.hashes"
    h = phash(photo("coffee"))
    path.write_text(f"{h:016x} coffee.jpg\n", encoding="utf-8")
    loaded = load_list(spec(path))
    assert len(loaded) == 1 and list(loaded.phash) == [(h, "coffee.jpg")]
    assert loaded.pdq.shape == (0, 4)


@pytest.mark.parametrize(
    ("name", "body", "line"),
    [
        ("a.pdq", "# c\n" + "0" * 64 + "\n" + "0" * 63 + "\n", 3),
        ("b.txt", "zz not a hash\n", 1),
        ("c.csv", "signal_type,signal_value\npdq,abc\n", 2),
    ],
)
def test_a_malformed_line_names_the_file_and_the_line(
    tmp_path: Path, name: str, body: str, line: int
) -> None:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{name}, line {line}:"):
        load_list(spec(path))


def test_a_csv_without_a_hash_column_says_which_columns_it_expects(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name,size\nfoo,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no hash column"):
        load_list(spec(path))


def test_image_folder_skips_and_counts_undecodable_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "sub" / "cat.png"), photo("chelsea")[:, :, ::-1])
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "flat.png").write_bytes(cv2.imencode(".png", np.zeros((50, 50, 3), np.uint8))[1])
    with caplog.at_level(logging.WARNING):
        loaded = load_list(spec(folder), min_quality=50)
    assert loaded.labels == ("sub/cat.png",)
    assert loaded.skipped_images == 1 and loaded.low_quality == 1
    skipped = [r for r in caplog.records if "cannot decode" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].__dict__["path"].endswith("broken.jpg")


def test_an_empty_list_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.pdq").write_text("# nothing yet\n", encoding="utf-8")
    loaded = load_list(spec(tmp_path / "empty", tmp_path / "empty.pdq"))
    assert len(loaded) == 0


def test_a_missing_path_is_an_error_naming_the_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"list 'partner': .*nope does not exist"):
        load_list(spec(tmp_path / "nope", name="partner"))


def test_listed_pictures_are_also_hashed_cropped_and_with_captions_cut_off(
    tmp_path: Path,
) -> None:
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), photo("coffee")[:, :, ::-1])
    (tmp_path / "list.pdq").write_text(f"{pdq.pdq(photo('camera')).hex()} cam\n", "utf-8")
    loaded = load_list(spec(tmp_path / "imgs", tmp_path / "list.pdq"), min_quality=20)
    assert sorted(loaded.labels) == ["a.png", "cam"] and len(loaded) == 2
    # Views belong to the picture, not to the hash line (there is no picture to cut).
    picture = loaded.labels.index("a.png")
    assert set(loaded.view_of.tolist()) == {picture}
    assert loaded.view_names == tuple(v.name for v in (*CROPS, *CAPTION_CUTS))
    cropped = pdq.pdq(np.ascontiguousarray(CROPS[4].crop(photo("coffee"))))
    assert np.array_equal(loaded.views[4], cropped.words)
