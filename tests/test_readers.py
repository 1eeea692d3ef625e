"""Reading uploaded dataset files: each format round-trips, and each bad file is refused with an
error that says where the problem is."""

import base64
import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainer.readers import (
    DatasetError,
    ReadLimits,
    format_of,
    preview,
    read_dataset,
)


def refused(path: Path, fmt: str, labelled: bool = True, **kwargs) -> DatasetError:
    with pytest.raises(DatasetError) as caught:
        read_dataset(path, fmt, labelled, **kwargs)
    return caught.value


def png(value=0, size=(8, 6), mode="L", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format=fmt)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def write_jsonl(path: Path, *lines) -> Path:
    text = (line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text("\n".join(text) + "\n")
    return path


def decoded(image: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(image["png_base64"])), formats=["PNG"])


# Common


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("d.npz", "npz"),
        ("D.CSV", "csv"),
        ("d.parquet", "parquet"),
        ("d.pq", "parquet"),
        ("d.jsonl", "jsonl"),
        ("d.ndjson", "jsonl"),
        ("images.Zip", "zip"),
    ],
)
def test_format_of_extension(filename, fmt):
    assert format_of(filename) == fmt


def test_format_of_refuses_other_extensions():
    with pytest.raises(DatasetError) as caught:
        format_of("data.xlsx")
    assert caught.value.where == "file"
    assert "unsupported file type '.xlsx'" in caught.value.message
    assert str(caught.value).startswith("file: unsupported")


@pytest.mark.parametrize("fmt", ["npz", "csv", "parquet", "jsonl", "zip"])
def test_empty_file(tmp_path, fmt):
    path = tmp_path / f"empty.{fmt}"
    path.write_bytes(b"")
    error = refused(path, fmt)
    assert (error.where, error.message) == ("file", "the file is empty")


@pytest.mark.parametrize("fmt", ["npz", "parquet", "zip"])
def test_unparseable_file(tmp_path, fmt):
    path = tmp_path / f"junk.{fmt}"
    path.write_bytes(b"this is not a binary file at all")
    error = refused(path, fmt)
    assert error.where == "file"
    assert f"not a valid {fmt} file" in error.message


def test_error_pickles_with_its_location():
    import pickle

    error = pickle.loads(pickle.dumps(DatasetError("line 3", "not a JSON object")))
    assert (error.where, error.message, str(error)) == (
        "line 3",
        "not a JSON object",
        "line 3: not a JSON object",
    )


# npz


def test_npz_tabular_round_trip(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    split = np.array(["train", "train", "validation", "test"])
    path = write_npz(tmp_path / "t.npz", x=x, y=np.array([10, 2, 2, 10]), split=split)
    data = read_dataset(path, "npz", labelled=True)
    assert data.modality == "tabular"
    assert data.x.dtype == np.float32
    np.testing.assert_array_equal(data.x, x)
    assert data.labels == ("2", "10")  # numeric order, not string order
    assert data.y.tolist() == [1, 0, 0, 1] and data.y.dtype == np.int64
    assert data.split.tolist() == split.tolist()
    assert data.feature_names == ("x0", "x1", "x2")
    assert len(data) == 4 and data.texts is None


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 7, 9), (5, 1, 7, 9)),
        ((5, 3, 7, 9), (5, 3, 7, 9)),
        ((5, 7, 9, 3), (5, 3, 7, 9)),
        ((5, 8, 8, 1), (5, 1, 8, 8)),
    ],
)
def test_npz_image_shapes(tmp_path, shape, expected):
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    path = write_npz(tmp_path / "i.npz", x=x, y=np.array(["cat", "dog"] * 2 + ["cat"]))
    data = read_dataset(path, "npz", labelled=True)
    assert data.modality == "image" and data.x.shape == expected
    assert data.feature_names is None and data.labels == ("cat", "dog")
    if shape[-1] == 3:
        np.testing.assert_array_equal(data.x, x.transpose(0, 3, 1, 2))


def test_npz_unlabelled_ignores_y(tmp_path):
    path = write_npz(tmp_path / "u.npz", x=np.zeros((3, 2)), y=np.array([1, 1, 1]))
    data = read_dataset(path, "npz", labelled=False)
    assert data.y is None and data.labels == () and data.split is None


def test_npz_pickled_objects_are_refused(tmp_path):
    path = write_npz(tmp_path / "o.npz", x=np.zeros((2, 2)), y=np.array([{"a": 1}, "b"], object))
    error = refused(path, "npz")
    assert error.where == "array 'y'"
    assert "never unpickled" in error.message


def test_npz_plain_pickle_is_refused(tmp_path):
    import pickle

    path = tmp_path / "p.npz"
    path.write_bytes(pickle.dumps({"x": [1, 2]}))
    error = refused(path, "npz")
    assert error.where == "file" and "not a valid npz file" in error.message


@pytest.mark.parametrize("shape", [(5,), (5, 2, 2, 2, 2), (5, 2, 3, 2), (5, 0)])
def test_npz_wrong_shape(tmp_path, shape):
    path = write_npz(tmp_path / "s.npz", x=np.zeros(shape), y=np.arange(5) % 2)
    error = refused(path, "npz")
    assert error.where == "array 'x'"
    assert f"shape {shape} is not" in error.message


@pytest.mark.parametrize(("bad", "word"), [(np.nan, "NaN"), (np.inf, "infinity")])
def test_npz_non_finite(tmp_path, bad, word):
    x = np.zeros((20, 3))
    x[12, 1] = bad
    x[15, 0] = np.nan
    path = write_npz(tmp_path / "n.npz", x=x, y=np.arange(20) % 2)
    error = refused(path, "npz")
    assert (error.where, error.message) == ("array 'x'", f"{word} at example 12")


def test_npz_label_count_mismatch(tmp_path):
    path = write_npz(tmp_path / "m.npz", x=np.zeros((100, 2)), y=np.arange(99) % 2)
    error = refused(path, "npz")
    assert (error.where, error.message) == ("array 'y'", "has 99 labels for 100 examples")


def test_npz_one_class(tmp_path):
    path = write_npz(tmp_path / "c.npz", x=np.zeros((3, 2)), y=np.array(["cat"] * 3))
    error = refused(path, "npz")
    assert error.where == "array 'y'"
    assert error.message == "only one class ('cat'); a classifier needs at least two"


def test_npz_labelled_needs_y(tmp_path):
    error = refused(write_npz(tmp_path / "n.npz", x=np.zeros((3, 2))), "npz")
    assert error.where == "array 'y'" and "not found" in error.message


def test_npz_float_labels_must_be_whole_numbers(tmp_path):
    path = write_npz(tmp_path / "f.npz", x=np.zeros((3, 2)), y=np.array([10.0, 2.0, 2.0]))
    data = read_dataset(path, "npz", labelled=True)
    assert data.labels == ("2", "10") and data.y.tolist() == [1, 0, 0]
    path = write_npz(tmp_path / "g.npz", x=np.zeros((3, 2)), y=np.array([0.0, 1.5, 1.0]))
    error = refused(path, "npz")
    assert error.where == "array 'y'"
    assert error.message.startswith("1.5 at example 1 is not a whole number")


def test_npz_unknown_array(tmp_path):
    path = write_npz(tmp_path / "u.npz", x=np.zeros((2, 2)), y=np.arange(2), foo=np.zeros(2))
    error = refused(path, "npz")
    assert (error.where, error.message) == ("array 'foo'", "unknown array; expected x, y, split")


def test_npz_bad_split_value(tmp_path):
    split = np.array(["train", "train", "test", "tst"])
    path = write_npz(tmp_path / "s.npz", x=np.zeros((4, 2)), y=np.arange(4) % 2, split=split)
    error = refused(path, "npz")
    assert error.where == "array 'split'"
    assert error.message == "value 'tst' at example 3 is not one of train, validation, test"


def test_npz_string_inputs_are_refused(tmp_path):
    path = write_npz(tmp_path / "s.npz", x=np.array([["a", "b"]]), y=np.array([0]))
    error = refused(path, "npz")
    assert error.where == "array 'x'" and "must be numbers" in error.message


# csv and parquet


def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [30, 41, 25, 60],
            "colour": ["red", "blue", "red", "green"],
            "member": [True, False, True, True],
            "label": [10, 2, 2, 10],
            "split": ["train", "train", "validation", "test"],
        }
    )


def write_table(path: Path, frame: pd.DataFrame) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, engine="pyarrow", index=False)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_round_trip(tmp_path, fmt):
    data = read_dataset(write_table(tmp_path / f"t.{fmt}", table()), fmt, labelled=True)
    assert data.modality == "tabular" and data.x.dtype == np.float32
    assert data.feature_names == ("age", "colour=blue", "colour=green", "colour=red", "member")
    np.testing.assert_array_equal(
        data.x,
        [[30, 0, 0, 1, 1], [41, 1, 0, 0, 0], [25, 0, 0, 1, 1], [60, 0, 1, 0, 1]],
    )
    assert data.labels == ("2", "10") and data.y.tolist() == [1, 0, 0, 1]
    assert data.split.tolist() == ["train", "train", "validation", "test"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_unlabelled_drops_the_label_column(tmp_path, fmt):
    path = write_table(tmp_path / f"t.{fmt}", table().drop(columns="split"))
    data = read_dataset(path, fmt, labelled=False)
    assert data.y is None and data.labels == () and data.split is None
    assert "label" not in data.feature_names


def test_table_custom_label_column(tmp_path):
    frame = table().rename(columns={"label": "target"})
    data = read_dataset(write_table(tmp_path / "t.csv", frame), "csv", True, label_column="target")
    assert data.labels == ("2", "10") and "target" not in data.feature_names


def test_table_missing_label_column(tmp_path):
    path = write_table(tmp_path / "t.csv", table().drop(columns="label"))
    error = refused(path, "csv")
    assert error.where == "column 'label'"
    assert error.message == "not found; the columns are age, colour, member, split"


def test_table_one_class(tmp_path):
    frame = table().assign(label="cat")
    error = refused(write_table(tmp_path / "t.csv", frame), "csv")
    assert error.where == "column 'label'" and "only one class ('cat')" in error.message


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_missing_value(tmp_path, fmt):
    frame = pd.DataFrame({"a": [1.0] * 20, "age": [1.0] * 20, "label": [0, 1] * 10})
    frame.loc[11, "age"] = np.nan
    frame.loc[14, "a"] = np.nan
    error = refused(write_table(tmp_path / f"t.{fmt}", frame), fmt)
    assert (error.where, error.message) == ("row 12, column 'age'", "missing value")


def test_table_empty_text_and_label_are_missing(tmp_path):
    frame = pd.DataFrame({"colour": ["red", "blue", " "], "label": ["a", "b", "a"]})
    error = refused(write_table(tmp_path / "t.parquet", frame), "parquet")
    assert (error.where, error.message) == ("row 3, column 'colour'", "missing value")
    path = tmp_path / "l.csv"
    path.write_text("x,label\n1,a\n2,\n3,b\n")
    error = refused(path, "csv")
    assert (error.where, error.message) == ("row 2, column 'label'", "missing value")


def test_table_non_numeric_cell(tmp_path):
    path = tmp_path / "t.csv"
    ages = [str(20 + i) for i in range(12)]
    ages[6] = "abc"
    path.write_text("age,label\n" + "".join(f"{a},{i % 2}\n" for i, a in enumerate(ages)))
    error = refused(path, "csv")
    assert (error.where, error.message) == ("row 7, column 'age'", "'abc' is not a number")


def test_table_infinity(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,label\n1,a\n2,b\ninf,a\n")
    error = refused(path, "csv")
    assert (error.where, error.message) == ("row 3, column 'x'", "infinity")


def test_table_too_many_categories(tmp_path):
    frame = pd.DataFrame({"city": [f"c{i}" for i in range(150)], "label": [0, 1] * 75})
    error = refused(write_table(tmp_path / "t.csv", frame), "csv")
    assert error.where == "column 'city'"
    assert error.message == "has 150 distinct values; a categorical feature may have at most 100"


def test_table_no_features(tmp_path):
    path = write_table(tmp_path / "t.csv", pd.DataFrame({"label": [0, 1]}))
    error = refused(path, "csv")
    assert (error.where, error.message) == ("file", "no feature columns besides the label")


def test_table_no_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,label\n")
    assert refused(path, "csv").where == "file"


def test_table_bad_split(tmp_path):
    frame = table().assign(split=["train", "train", "tst", "test"])
    error = refused(write_table(tmp_path / "t.csv", frame), "csv")
    assert error.where == "row 3, column 'split'"
    assert "'tst' is not one of train, validation, test" in error.message


def test_csv_parse_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,label\n1,x\n"2,y\n')
    error = refused(path, "csv")
    assert error.where == "file" and "not a valid csv file" in error.message


# jsonl


def test_jsonl_round_trip(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        {"text": "good film", "label": 10, "split": "train"},
        "",
        {"text": "bad film", "label": 2, "split": "test"},
        {"text": "fine", "label": "10", "split": "validation"},
    )
    data = read_dataset(path, "jsonl", labelled=True)
    assert data.modality == "text" and data.x is None
    assert data.texts == ("good film", "bad film", "fine")
    assert data.labels == ("2", "10") and data.y.tolist() == [1, 0, 1]
    assert data.split.tolist() == ["train", "test", "validation"]
    assert len(data) == 3


def test_jsonl_unlabelled_text_only(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", {"text": "a"}, {"text": "b", "label": "x"})
    data = read_dataset(path, "jsonl", labelled=False)
    assert data.texts == ("a", "b") and data.y is None and data.labels == ()
    assert data.split is None


@pytest.mark.parametrize(
    ("line", "where", "phrase"),
    [
        ('{"text": "b", "label": 1', "line 3", "invalid JSON"),
        ('["b", 1]', "line 3", "not a JSON object"),
        ('{"text": "b", "label": 1, "foo": 2}', "line 3, field 'foo'", "unknown field"),
        ('{"label": 1}', "line 3", "`text` is missing"),
        ('{"text": "", "label": 1}', "line 3", "`text` must be a non-empty string"),
        ('{"text": "b"}', "line 3", "`label` is missing"),
        ('{"text": "b", "label": 1.5}', "line 3", "`label` must be a string or an integer"),
    ],
)
def test_jsonl_bad_line(tmp_path, line, where, phrase):
    path = write_jsonl(tmp_path / "t.jsonl", {"text": "a", "label": 0}, "", line)
    error = refused(path, "jsonl")
    assert error.where == where and phrase in error.message


def test_jsonl_split_on_every_line_or_none(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        {"text": "a", "label": 0, "split": "train"},
        {"text": "b", "label": 1},
    )
    assert refused(path, "jsonl").where == "line 2, field 'split'"
    path = write_jsonl(tmp_path / "s.jsonl", {"text": "a", "label": 0, "split": "dev"})
    error = refused(path, "jsonl")
    assert error.where == "line 1, field 'split'" and "'dev' is not one of" in error.message


def test_jsonl_one_class_and_no_examples(tmp_path):
    path = write_jsonl(
        tmp_path / "t.jsonl", {"text": "a", "label": "x"}, {"text": "b", "label": "x"}
    )
    assert "only one class ('x')" in refused(path, "jsonl").message
    blank = tmp_path / "b.jsonl"
    blank.write_text("\n  \n")
    assert refused(blank, "jsonl").where == "file"


# zip


def test_zip_class_folders_round_trip(tmp_path):
    path = write_zip(
        tmp_path / "i.zip",
        {
            "data/": b"",
            "data/dog/b.png": png(200),
            "data/cat/a.png": png(10),
            "data/cat/c.jpg": png(30, fmt="JPEG"),
            "data/cat/.DS_Store": b"junk",
            "__MACOSX/data/cat/._a.png": b"junk",
        },
    )
    data = read_dataset(path, "zip", labelled=True)
    assert data.modality == "image" and data.x.shape == (3, 1, 6, 8)
    assert data.x.dtype == np.float32
    assert data.labels == ("cat", "dog") and data.y.tolist() == [0, 0, 1]  # by member name
    assert data.x[0].max() == 10 and data.x[2].min() == 200
    assert abs(float(data.x[1].mean()) - 30) < 3  # JPEG is lossy
    assert data.split is None and data.feature_names is None


def test_zip_colour_makes_every_image_rgb(tmp_path):
    members = {"a/1.png": png(50), "b/2.png": png((255, 0, 0), mode="RGB")}
    data = read_dataset(write_zip(tmp_path / "i.zip", members), "zip", labelled=True)
    assert data.x.shape == (2, 3, 6, 8)
    assert data.x[0, :, 0, 0].tolist() == [50, 50, 50]
    assert data.x[1, :, 0, 0].tolist() == [255, 0, 0]


def test_zip_16_bit_grey_is_scaled_not_clipped(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(buffer, format="PNG")
    members = {"1.png": buffer.getvalue(), "2.png": png(0, size=(4, 4))}
    data = read_dataset(write_zip(tmp_path / "i.zip", members), "zip", labelled=False)
    assert data.x.shape == (2, 1, 4, 4) and data.x[0].min() == 255


def test_zip_flat_unlabelled(tmp_path):
    path = write_zip(tmp_path / "i.zip", {"b.png": png(1), "a.png": png(2)})
    data = read_dataset(path, "zip", labelled=False)
    assert data.x.shape == (2, 1, 6, 8) and data.y is None and data.labels == ()
    assert data.x[0].max() == 2  # a.png first


def test_zip_labelled_flat_archive(tmp_path):
    path = write_zip(tmp_path / "i.zip", {"a.png": png(1), "b.png": png(2)})
    error = refused(path, "zip")
    assert error.where == "file" and error.message.startswith("no class folders")


def test_zip_mixed_layout(tmp_path):
    path = write_zip(tmp_path / "i.zip", {"cat/a.png": png(1), "z.png": png(2)})
    error = refused(path, "zip", labelled=False)
    assert error.where == "archive member 'z.png'"
    assert "expected class-folder/image or a flat list" in error.message
    path = write_zip(tmp_path / "d.zip", {"cat/a.png": png(1), "dog/x/b.png": png(2)})
    assert refused(path, "zip").where == "archive member 'dog/x/b.png'"


def test_zip_too_many_members(tmp_path):
    path = write_zip(tmp_path / "i.zip", {f"c{i % 2}/{i}.png": png(i) for i in range(4)})
    error = refused(path, "zip", limits=ReadLimits(max_members=3))
    assert error.where == "file"
    assert error.message == "the archive has 4 members; at most 3 are allowed"


@pytest.mark.parametrize("name", ["../cat/a.png", "cat/../../a.png", "/etc/cat/a.png"])
def test_zip_unsafe_names(tmp_path, name):
    path = write_zip(tmp_path / "i.zip", {"dog/b.png": png(1), name: png(2)})
    error = refused(path, "zip")
    assert error.where == f"archive member '{name}'" and "unsafe name" in error.message


def test_zip_symlink_member(tmp_path):
    path = tmp_path / "i.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dog/b.png", png(1))
        link = zipfile.ZipInfo("cat/a.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    error = refused(path, "zip")
    assert error.where == "archive member 'cat/a.png'" and "unsafe name" in error.message


def patch_sizes(path: Path, size: int) -> None:
    """Rewrite the first member's uncompressed size in its local and central headers."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 22, size)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, size)
    path.write_bytes(bytes(data))


def test_zip_declared_size_bomb(tmp_path):
    path = write_zip(tmp_path / "i.zip", {"cat/a.png": png(1), "dog/b.png": png(2)})
    patch_sizes(path, 0xF000_0000)  # claims ~4 GB
    error = refused(path, "zip")
    assert error.where == "file"
    assert (
        error.message.startswith("the archive would expand to 4026531")
        and "at most" in error.message
    )


def test_zip_compression_ratio_bomb(tmp_path):
    members = {"cat/a.png": png(1), "dog/b.png": bytes(5 * 1024 * 1024)}
    path = write_zip(tmp_path / "i.zip", members, zipfile.ZIP_DEFLATED)
    error = refused(path, "zip")
    assert error.where == "archive member 'dog/b.png'"
    assert "compression ratio" in error.message and "exceeds 100:1" in error.message


def test_zip_member_larger_than_declared(tmp_path):
    path = write_zip(tmp_path / "i.zip", {"cat/a.png": png(1), "dog/b.png": png(2)})
    patch_sizes(path, len(png(1)) - 10)
    error = refused(path, "zip")
    assert error.where == "archive member 'cat/a.png'" and "declared size" in error.message


def test_zip_undecodable_image(tmp_path):
    members = {"cat/a.png": png(1), "dog/b.png": b"\x89PNG\r\n\x1a\n but not really"}
    error = refused(write_zip(tmp_path / "i.zip", members), "zip")
    assert error.where == "archive member 'dog/b.png'"
    assert error.message.startswith("cannot decode the image")


def test_zip_image_with_too_many_pixels(tmp_path):
    members = {"cat/a.png": png(1), "dog/b.png": png(2)}
    error = refused(
        write_zip(tmp_path / "i.zip", members), "zip", limits=ReadLimits(max_image_pixels=40)
    )
    assert error.where == "archive member 'cat/a.png'" and "is 8x6 pixels" in error.message


def test_zip_mixed_sizes(tmp_path):
    members = {"cat/a.png": png(1, size=(28, 28)), "dog/b.png": png(2, size=(32, 32))}
    error = refused(write_zip(tmp_path / "i.zip", members), "zip")
    assert error.where == "archive member 'dog/b.png'"
    assert error.message == (
        "is 32x32 pixels; the first image is 28x28; all images must have one size"
    )


def test_zip_non_image_member(tmp_path):
    members = {"cat/a.png": png(1), "cat/notes.txt": b"hello", "dog/b.png": png(2)}
    error = refused(write_zip(tmp_path / "i.zip", members), "zip")
    assert (error.where, error.message) == (
        "archive member 'cat/notes.txt'",
        "not a PNG or JPEG file",
    )


def test_zip_decoded_size_limit(tmp_path):
    members = {"cat/a.png": png(1, size=(64, 64)), "dog/b.png": png(2, size=(64, 64))}
    limits = ReadLimits(max_uncompressed_bytes=64 * 64 * 4 * 1 + 100)
    error = refused(write_zip(tmp_path / "i.zip", members), "zip", limits=limits)
    assert error.where == "file" and "the images would decode to" in error.message


# preview


def test_preview_table_rows(tmp_path):
    frame = table()
    frame.loc[1, "age"] = np.nan
    for fmt in ("csv", "parquet"):
        shown = preview(write_table(tmp_path / f"t.{fmt}", frame), fmt, count=2)
        assert shown == {
            "rows": [
                {"age": 30.0, "colour": "red", "member": True, "label": 10, "split": "train"},
                {"age": None, "colour": "blue", "member": False, "label": 2, "split": "train"},
            ]
        }
        json.dumps(shown)


def test_preview_jsonl_rows(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", "", {"text": "a", "label": 1}, {"text": "b"}, "{bad")
    assert preview(path, "jsonl", count=2) == {"rows": [{"text": "a", "label": 1}, {"text": "b"}]}


def test_preview_npz_tabular_rows(tmp_path):
    path = write_npz(tmp_path / "t.npz", x=np.arange(6).reshape(3, 2), y=np.array([0, 1, 1]))
    assert preview(path, "npz", count=2) == {"rows": [{"x": [0, 1], "y": 0}, {"x": [2, 3], "y": 1}]}


def test_preview_npz_images(tmp_path):
    x = np.random.default_rng(0).random((4, 3, 5, 7)).astype(np.float32)
    path = write_npz(tmp_path / "i.npz", x=x, y=np.array(["a", "b", "a", "b"]))
    shown = preview(path, "npz", count=3)["images"]
    assert [image["label"] for image in shown] == ["a", "b", "a"]
    image = decoded(shown[0])
    assert (image.mode, image.size) == ("RGB", (7, 5))
    assert np.asarray(image).max() == 255  # stretched for display


def test_preview_zip_images(tmp_path):
    members = {"cat/a.png": png(10), "cat/b.png": png(20), "dog/c.png": png(30)}
    shown = preview(write_zip(tmp_path / "i.zip", members), "zip", count=2)["images"]
    assert [image["label"] for image in shown] == ["cat", "cat"]
    image = decoded(shown[1])
    assert (image.mode, image.size) == ("L", (8, 6)) and np.asarray(image).max() == 20
    flat = preview(write_zip(tmp_path / "f.zip", {"a.png": png(1)}), "zip")
    assert flat["images"][0]["label"] is None


def test_preview_zip_checks_the_archive_first(tmp_path):
    path = write_zip(tmp_path / "i.zip", {"../a.png": png(1)})
    with pytest.raises(DatasetError) as caught:
        preview(path, "zip")
    assert caught.value.where == "archive member '../a.png'"


def test_npz_regression_targets_are_numbers_named_y(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    one = read_dataset(write_npz(tmp_path / "a.npz", x=x, y=np.array([1.5, 2, 3, 4])), "npz",
                       True, task="regression")  # fmt: skip
    assert one.task == "regression" and one.targets == ("y",) and one.labels == ()
    assert one.y.dtype == np.float32 and one.y.tolist() == [[1.5], [2], [3], [4]]
    two = read_dataset(write_npz(tmp_path / "b.npz", x=x, y=np.ones((4, 2))), "npz", True,
                       task="regression")  # fmt: skip
    assert two.targets == ("y0", "y1") and two.y.shape == (4, 2)
    for y, said in ((np.array(["a", "b", "c", "d"]), "targets are numbers"),
                    (np.ones(3), "targets are (4,)"),
                    (np.array([1.0, np.nan, 2, 3]), "target 0 of example 1 is nan")):  # fmt: skip
        error = refused(write_npz(tmp_path / "c.npz", x=x, y=y), "npz", task="regression")
        assert error.where == "array 'y'" and said in error.message, error


def test_multilabel_tables_and_jsonl_read_label_sets(tmp_path):
    table = tmp_path / "tags.csv"
    table.write_text("x,tags\n1.0,red;blue\n2.0,\n3.0, blue ;blue\n4.0,green\n")
    parsed = read_dataset(table, "csv", True, label_column="tags", task="multilabel")
    assert parsed.task == "multilabel" and parsed.labels == ("blue", "green", "red")
    assert parsed.y.tolist() == [[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]]
    lines = [{"text": "a", "labels": ["x", 2]}, {"text": "b", "labels": []},
             {"text": "c", "labels": ["2"]}]  # fmt: skip
    jsonl = tmp_path / "tags.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    parsed = read_dataset(jsonl, "jsonl", True, task="multilabel")
    assert parsed.labels == ("2", "x") and parsed.y.tolist() == [[1, 1], [0, 0], [1, 0]]


@pytest.mark.parametrize(
    ("lines", "where", "said"),
    [
        ([{"text": "a", "label": "x"}], "line 1, field 'label'", "`labels`, a list"),
        ([{"text": "a", "labels": "x"}], "line 1, field 'labels'", "a list of strings"),
        ([{"text": "a"}], "line 1", "`labels` is missing"),
        ([{"text": "a", "labels": ["x"]}, {"text": "b", "labels": []}], "file", "at least two"),
    ],
)
def test_multilabel_jsonl_is_refused_where_it_is_wrong(tmp_path, lines, where, said):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    error = refused(path, "jsonl", task="multilabel")
    assert error.where == where and said in error.message, error


def test_multilabel_images_take_their_label_sets_from_the_archives_table(tmp_path):
    index = (
        "file,labels,split\nimgs/a.png,cat;dog,train\nimgs/b.png,,test\nimgs/c.png, dog ,train\n"
    )
    members = {"labels.csv": index.encode(), "imgs/a.png": png(10), "imgs/b.png": png(20),
               "imgs/c.png": png(30), "notes.txt": b"not listed, not read"}  # fmt: skip
    data = read_dataset(write_zip(tmp_path / "a.zip", members), "zip", True, task="multilabel")
    assert data.modality == "image" and data.task == "multilabel" and data.x.shape == (3, 1, 6, 8)
    assert data.labels == ("cat", "dog") and data.y.tolist() == [[1, 1], [0, 0], [0, 1]]
    assert data.x[:, 0, 0, 0].tolist() == [10, 20, 30] and data.split.tolist()[1] == "test"
    # Class folders say one label each: a multilabel archive needs its table.
    error = refused(write_zip(tmp_path / "b.zip", {"a/x.png": png()}), "zip", task="multilabel")
    assert error.where == "file" and "labels.csv" in error.message
    members["labels.csv"] = b"file,label\nimgs/a.png,cat\n"  # a classifier's column
    error = refused(write_zip(tmp_path / "c.zip", members), "zip", task="multilabel")
    assert error.where == "labels.csv" and "no column 'labels'" in error.message
    members["labels.csv"] = b"file,labels\nimgs/a.png,cat\nnotes.txt,dog\n"
    error = refused(write_zip(tmp_path / "d.zip", members), "zip", task="multilabel")
    assert error.where == "labels.csv, row 2, column 'file'" and "PNG or JPEG" in error.message


# zip of audio clips


def sound(seconds: float, rate: int, fmt: str = "WAV", channels: int = 1, hz=440.0) -> bytes:
    """A tone at half scale (a stereo file: the tone left, silence right)."""
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    samples = 0.5 * np.sin(2 * np.pi * hz * t)
    if channels == 2:
        samples = np.stack([samples, np.zeros_like(samples)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def test_zip_audio_clips_are_resampled_to_one_rate_and_padded_to_the_longest(tmp_path):
    from trainer.waveforms import SAMPLE_RATE

    members = {
        "digits/yes/a.wav": sound(0.5, 8000),
        "digits/yes/b.flac": sound(0.25, 44100, "FLAC", channels=2),
        "digits/no/c.WAV": sound(0.1, SAMPLE_RATE, hz=1000.0),
        "digits/no/.DS_Store": b"junk",
    }
    data = read_dataset(write_zip(tmp_path / "a.zip", members), "zip", labelled=True)
    assert data.modality == "audio" and data.x.dtype == np.float32
    assert data.x.shape == (3, SAMPLE_RATE // 2)  # 0.5 s, the longest clip, at 16 kHz
    assert data.labels == ("no", "yes") and data.y.tolist() == [0, 1, 1]  # by member name
    # The FLAC's channels averaged: the tone at a quarter scale, for 0.25 s, then padding.
    flac = data.x[2]
    assert abs(np.abs(flac[: SAMPLE_RATE // 4 - 100]).max() - 0.25) < 0.01
    assert np.abs(flac[SAMPLE_RATE // 4 + 100 :]).max() == 0
    # The 8 kHz tone upsampled keeps its pitch: 440 Hz has 220 zero crossings in 0.5 s.
    crossings = np.count_nonzero(np.diff(np.signbit(data.x[1][100:-100])))
    assert abs(crossings - 0.49 * 2 * 440) < 5
    shown = preview(tmp_path / "a.zip", "zip", count=2)["rows"]
    assert shown == [
        {"label": "no", "file": "digits/no/c.WAV", "seconds": 0.1},
        {"label": "yes", "file": "digits/yes/a.wav", "seconds": 0.5},
    ]


def test_zip_audio_refuses_what_is_not_a_clip_naming_it(tmp_path):
    members = {"yes/a.wav": sound(0.1, 8000), "yes/b.wav": b"RIFF not really", "no/c.wav": b""}
    error = refused(write_zip(tmp_path / "a.zip", members), "zip")
    assert error.where == "archive member 'no/c.wav'" and "WAV or FLAC" in error.message
    members = {"yes/a.wav": sound(0.1, 8000), "no/b.png": png(1)}
    error = refused(write_zip(tmp_path / "b.zip", members), "zip")
    assert error.where == "archive member 'no/b.png'" and "not a WAV or FLAC file" in error.message
    long = {"yes/a.wav": sound(31, 8000), "no/b.wav": sound(0.1, 8000)}
    error = refused(write_zip(tmp_path / "c.zip", long), "zip")
    assert error.where == "archive member 'yes/a.wav'" and "at most 30 s" in error.message
    flat = write_zip(tmp_path / "d.zip", {"a.wav": sound(0.1, 8000)})
    assert refused(flat, "zip").message.startswith("no class folders; a labelled clip dataset")
    assert read_dataset(flat, "zip", labelled=False).y is None


def test_zip_audio_clips_listed_by_a_table_take_its_labels_and_splits(tmp_path):
    index = "file,label,split\nclips/1.wav,yes,train\nclips/2.flac,no,test\nclips/3.wav,yes,\n"
    members = {
        "labels.csv": index.encode(),
        "clips/1.wav": sound(0.2, 8000),
        "clips/2.flac": sound(0.1, 16000, "FLAC"),
        "clips/3.wav": sound(0.1, 8000),
        "README.txt": b"not listed, not read",
    }
    path = write_zip(tmp_path / "a.zip", members)
    with pytest.raises(DatasetError) as caught:  # an empty split is no split name
        read_dataset(path, "zip", labelled=True)
    assert caught.value.where == "labels.csv, row 3, column 'split'"
    members["labels.csv"] = index.replace("yes,\n", "yes,validation\n").encode()
    data = read_dataset(write_zip(tmp_path / "b.zip", members), "zip", labelled=True)
    assert data.modality == "audio" and data.x.shape == (3, 3200)  # 0.2 s at 16 kHz
    assert data.labels == ("no", "yes") and data.y.tolist() == [1, 0, 1]  # the table's order
    assert data.split.tolist() == ["train", "test", "validation"]
    members["labels.csv"] = b"file,label\nclips/1.wav,yes\nclips/9.wav,no\n"
    error = refused(write_zip(tmp_path / "c.zip", members), "zip")
    assert error.where == "labels.csv, row 2, column 'file'" and "'clips/9.wav'" in error.message
    members["labels.csv"] = b"path,label\nclips/1.wav,yes\n"
    error = refused(write_zip(tmp_path / "d.zip", members), "zip")
    assert error.where == "labels.csv" and "no column 'file'" in error.message
