"""`rayda convert`: miniature trees with the public datasets' names and encodings, converted through Ray Data."""
import io
import json
from pathlib import Path

import numpy as np
import OpenEXR
import png
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rayda.classes import PROTOCOLS
from rayda.cli import main
from rayda.convert import KINDS, convert
from rayda.convert.common import ConvertError
from rayda.convert.folder import class_map
from rayda.convert.pipeline import get_kind
from rayda.convert.synscapes import read_exr_depth
from rayda.data import DatasetError, read_info

H, W = 16, 32
REPO = Path(__file__).resolve().parents[1]


# --- writing miniature trees --------------------------------------------------------------------

def _save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def rgb(path, value=0, h=H, w=W):
    return _save(path, Image.fromarray(np.full((h, w, 3), value, np.uint8)))


def ids8(path, ids, palettised=False):
    """Single-channel 8-bit ids, or (palettised) a P-mode PNG whose palette indices are the ids, as GTA5's."""
    ids = np.asarray(ids, np.uint8)
    img = Image.frombytes("P" if palettised else "L", (ids.shape[1], ids.shape[0]), ids.tobytes())
    if palettised:
        img.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tolist())
    return _save(path, img)


def colors(path, array):
    return _save(path, Image.fromarray(np.asarray(array, np.uint8)))


def depth16(path, values):
    return _save(path, Image.fromarray(np.asarray(values, np.uint16)))


def png16_rgb(path, channels):
    """A 16-bit RGB PNG (SYNTHIA's labels); PIL cannot write these."""
    h, w, _ = channels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        png.Writer(w, h, bitdepth=16, greyscale=False).write(f, channels.reshape(h, w * 3).tolist())
    return path


def exr(path, z):
    path.parent.mkdir(parents=True, exist_ok=True)
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                      {"Z": np.asarray(z, np.float32)}) as f:
        f.write(str(path))
    return path


def halves(left, right, h=H, w=W):
    a = np.full((h, w), left)
    a[:, w // 2:] = right
    return a


# --- reading converted rows ---------------------------------------------------------------------

def rows(info) -> dict:
    out = {}
    for path in info.shard_paths():
        for row in pq.read_table(path).to_pylist():
            out[row.pop("id")] = row
    return out


def decode(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def skipped(out) -> dict:
    return {r["path"]: r["reason"] for r in json.loads((Path(out) / "skipped.json").read_text())}


# --- tests --------------------------------------------------------------------------------------

def test_gta5_palette_indices_become_train_ids_and_bad_files_are_skipped_with_reasons(ray_session, tmp_path):
    root = tmp_path / "GTA5"
    ok = halves(7, 26)             # road | car
    ok[0] = 0                      # unlabeled -> ignore
    ok[1, 0] = 255                 # license plate (-1) -> ignore
    rgb(root / "images/00001.png", 10), ids8(root / "labels/00001.png", ok, palettised=True)
    rgb(root / "images/00002.png", 20), ids8(root / "labels/00002.png", np.full((H, W), 24), palettised=True)
    rgb(root / "images/00003.png"), ids8(root / "labels/00003.png", np.full((H, W - 2), 7), palettised=True)
    noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    _save(tmp_path / "noise.png", Image.fromarray(noise))
    (root / "images/00004.png").write_bytes((tmp_path / "noise.png").read_bytes()[:400])  # truncated
    ids8(root / "labels/00004.png", ok, palettised=True)
    rgb(root / "images/00005.png")                                                     # no label
    rgb(root / "images/00006.png"), ids8(root / "labels/00006.png", halves(7, 34), palettised=True)
    rgb(root / "images/00007.png"), colors(root / "labels/00007.png", np.zeros((H, W, 3)))

    info = convert("gta5", root, tmp_path / "out", on_error="skip", rows_per_shard=1)
    assert read_info(info.path).num_rows == 2 and info.domain == "synthetic" and info.name == "gta5-all"
    got = rows(info)
    label = decode(got["gta5-00001"]["label"])
    want = halves(0, 13)
    want[0] = 255
    want[1, 0] = 255
    np.testing.assert_array_equal(label, want)
    assert np.all(decode(got["gta5-00002"]["label"]) == 11)  # labelId 24 -> person
    assert got["gta5-00001"]["image"] == (root / "images/00001.png").read_bytes()  # the original file, not re-encoded
    assert got["gta5-00001"]["depth"] is None and not info.has_depth
    car = (H - 1) * (W // 2)  # rows 1.. of the right half; the left half less one pixel is road
    assert got["gta5-00001"]["class_pixels"][13] == car and got["gta5-00001"]["class_pixels"][0] == car - 1
    assert info.class_pixels[11] == H * W and info.class_pixels[0] == car - 1

    reasons = skipped(info.path)
    assert info.source["skipped"] == 5 == len(reasons)
    assert reasons[str(root / "labels/00003.png")] == f"label is {W - 2}x{H}, image {root / 'images/00003.png'} is {W}x{H}"
    assert reasons[str(root / "images/00004.png")].startswith("unreadable image (corrupt:")
    assert reasons[str(root / "labels/00005.png")] == f"label missing for image {root / 'images/00005.png'}"
    assert reasons[str(root / "labels/00006.png")] == "unknown label values [34] (known: 0..33, 255)"
    assert reasons[str(root / "labels/00007.png")].startswith("label has mode RGB; expected 8-bit ids")
    src = info.source
    assert src["converter"] == "gta5" and src["root"] == str(root) and src["split"] == "all"
    assert src["mapping"]["7"] == 0 and src["mapping"]["26"] == 13 and src["mapping"]["0"] == 255


def test_raise_stops_at_the_first_bad_file_with_its_path_and_reason(ray_session, tmp_path, capsys):
    root = tmp_path / "GTA5"
    rgb(root / "images/00001.png"), ids8(root / "labels/00001.png", halves(7, 34), palettised=True)
    with pytest.raises(ConvertError) as e:
        convert("gta5", root, tmp_path / "out")
    assert type(e.value) is ConvertError  # unwrapped from Ray's task error
    assert str(e.value) == f"{root / 'labels/00001.png'}: unknown label values [34] (known: 0..33, 255)"
    assert not (tmp_path / "out" / "dataset.json").exists()

    assert main(["convert", "gta5", "--root", str(root), "--out", str(tmp_path / "cli"), "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"rayda convert: error: {root / 'labels/00001.png'}: unknown label values [34] (known: 0..33, 255)"


def test_all_files_skipped_is_an_error_and_still_lists_them(ray_session, tmp_path):
    root = tmp_path / "GTA5"
    (root / "labels").mkdir(parents=True)
    for i in (1, 2):
        rgb(root / f"images/0000{i}.png")
    with pytest.raises(DatasetError, match=r"all 2 samples were skipped, e\.g\. .*00001\.png: label missing"):
        convert("gta5", root, tmp_path / "out", on_error="skip")
    assert len(skipped(tmp_path / "out")) == 2


def test_wrong_root_empty_tree_and_misused_options_fail_before_any_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rgb(tmp_path / "GTA5/images/00001.png")
    with pytest.raises(ConvertError, match=r"GTA5: not a Cityscapes root: no leftImg8bit/"):
        convert("cityscapes", tmp_path / "GTA5", out, overwrite=True)
    with pytest.raises(ConvertError, match=r"GTA5: not a GTA5 root: no labels/"):
        convert("gta5", tmp_path / "GTA5", out, overwrite=True)
    (tmp_path / "cs/leftImg8bit/train/aachen").mkdir(parents=True)
    (tmp_path / "cs/gtFine/train").mkdir(parents=True)
    with pytest.raises(ConvertError, match=r"leftImg8bit/train: no images matching \*/\*_leftImg8bit\.png"):
        convert("cityscapes", tmp_path / "cs", out, overwrite=True)
    with pytest.raises(ConvertError, match="root directory not found"):
        convert("kitti", tmp_path / "nope", out)
    with pytest.raises(ValueError, match=r"option rgb does not apply to gta5"):
        convert("gta5", tmp_path / "GTA5", out, rgb="rgb-2k")
    with pytest.raises(ValueError, match=r"cityscapes has splits train, val, test; got 'training'"):
        convert("cityscapes", tmp_path / "cs", out, split="training")
    with pytest.raises(ValueError, match=r"unknown protocol '12'"):
        convert("gta5", tmp_path / "GTA5", out, protocol=12)
    with pytest.raises(ValueError, match=r"unknown kind 'idd'"):
        convert("idd", tmp_path, out)
    assert (out / "keep.txt").exists()  # nothing was emptied
    assert {k: get_kind(k).domain for k in KINDS}  # every listed kind resolves


def test_cityscapes_label_ids_become_train_ids_and_test_has_no_labels(ray_session, tmp_path):
    root = tmp_path / "cityscapes"
    for city, stem, ids in (("aachen", "aachen_000000_000019", halves(7, 26)), ("bonn", "bonn_000001_000019", halves(33, 4))):
        rgb(root / f"leftImg8bit/train/{city}/{stem}_leftImg8bit.png")
        ids8(root / f"gtFine/train/{city}/{stem}_gtFine_labelIds.png", ids)
    rgb(root / "leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png")

    train = rows(convert("cityscapes", root, tmp_path / "train"))
    np.testing.assert_array_equal(decode(train["cityscapes-aachen_000000_000019"]["label"]), halves(0, 13))
    np.testing.assert_array_equal(decode(train["cityscapes-bonn_000001_000019"]["label"]), halves(18, 255))
    test = convert("cityscapes", root, tmp_path / "test", split="test")
    assert not test.has_labels and test.domain == "real" and test.num_rows == 1
    row = rows(test)["cityscapes-berlin_000000_000019"]
    assert row["label"] is None and row["class_pixels"] is None


def test_synthia_reads_16bit_ids_from_r_and_depth_with_its_scale_into_16_classes(ray_session, tmp_path, capsys):
    root = tmp_path / "RAND_CITYSCAPES"
    label = np.zeros((H, W, 3), np.uint16)
    label[..., 0] = halves(3, 8)                   # road | car (raw SYNTHIA ids)
    label[:2, :, 0] = 16                            # terrain: not in the 16 classes
    label[..., 1] = 300 + np.arange(W)              # instance ids over 255: PIL would read the high byte
    mm = np.full((H, W), 12345, np.uint16)
    mm[0, 0] = 0                                    # unknown depth stays unknown
    rgb(root / "RGB/0000001.png", 50)
    png16_rgb(root / "GT/LABELS/0000001.png", label)
    depth16(root / "Depth/Depth/0000001.png", mm)

    argv = ["convert", "synthia", "--root", str(root), "--out", str(tmp_path / "out"), "--protocol", "16",
            "--depth-scale", "1000"]
    assert main(argv) == 0, capsys.readouterr().err
    info = read_info(tmp_path / "out")
    assert info.classes.protocol == "16" and info.classes.num_classes == 16 and info.has_depth
    row = rows(info)["synthia-0000001"]
    car16 = PROTOCOLS["16"].index(13)
    want = halves(0, car16)
    want[:2] = 255
    np.testing.assert_array_equal(decode(row["label"]), want)
    depth_cm = decode(row["depth"])
    assert depth_cm.dtype == np.uint16 and depth_cm[0, 0] == 0 and np.all(depth_cm.ravel()[1:] == 1234)  # 12.345 m
    assert info.source["options"] == {"depth_scale": 1000.0}


def test_synscapes_exr_depth_is_metres_and_rgb_2k_upscales_class_and_depth(ray_session, tmp_path):
    root = tmp_path / "Synscapes"
    z = np.full((H, W), 7.5, np.float32)
    z[0] = np.inf                                   # sky: no depth
    for n in (1, 2, 10):
        rgb(root / f"img/rgb/{n}.png", n), rgb(root / f"img/rgb-2k/{n}.png", n, 2 * H, 2 * W)
        ids8(root / f"img/class/{n}.png", halves(7, 23))
        exr(root / f"img/depth/{n}.exr", z)

    native = convert("synscapes", root, tmp_path / "native")
    assert native.num_rows == 3 and native.has_depth
    row = rows(native)["synscapes-10"]
    np.testing.assert_array_equal(decode(row["label"]), halves(0, 10))
    depth = decode(row["depth"])
    assert np.all(depth[0] == 0) and np.all(depth[1:] == 750)

    big = rows(convert("synscapes", root, tmp_path / "2k", rgb="rgb-2k"))["synscapes-2"]
    assert (big["height"], big["width"]) == (2 * H, 2 * W)
    np.testing.assert_array_equal(decode(big["label"]), halves(0, 10, 2 * H, 2 * W))
    assert np.all(decode(big["depth"])[2:] == 750) and np.all(decode(big["depth"])[:2] == 0)

    (root / "img/depth/bad.exr").write_bytes(b"not an exr")
    with pytest.raises(ConvertError, match=r"bad\.exr: unreadable depth \(corrupt or not an EXR file\)"):
        read_exr_depth(str(root / "img/depth/bad.exr"), "img.png")
    exr_path = root / "img/depth/rgb.exr"
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"R": z, "G": z, "B": z}) as f:
        f.write(str(exr_path))
    with pytest.raises(ConvertError, match=r"EXR has channels \['B', 'G', 'R'\]; expected planar depth in 'Z'"):
        read_exr_depth(str(exr_path), "img.png")


def test_vkitti1_instance_colours_fold_into_their_class_and_unknown_colours_are_reported(ray_session, tmp_path):
    root = tmp_path / "vkitti"
    encoding = "Category r g b\nRoad 100 60 100\nSky 90 200 255\nGuardRail 250 100 255\nCar:0 200 10 10\nCar:1 200 10 11\nVan:0 0 139 140\n"
    gt = np.zeros((H, W, 3), np.uint8)
    gt[:] = (100, 60, 100)
    gt[:4] = (90, 200, 255)
    gt[4:8, :8] = (200, 10, 10)
    gt[4:8, 8:16] = (200, 10, 11)
    gt[4:8, 16:24] = (0, 139, 140)
    gt[4:8, 24:] = (250, 100, 255)
    for variation in ("clone", "fog"):
        rgb(root / f"vkitti_1.3.1_rgb/0001/{variation}/00000.png")
        depth16(root / f"vkitti_1.3.1_depthgt/0001/{variation}/00000.png", np.full((H, W), 2500))
        (root / f"vkitti_1.3.1_scenegt/0001_{variation}_scenegt_rgb_encoding.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"vkitti_1.3.1_scenegt/0001_{variation}_scenegt_rgb_encoding.txt").write_text(encoding)
    colors(root / "vkitti_1.3.1_scenegt/0001/clone/00000.png", gt)
    bad = gt.copy()
    bad[-1, -1] = (1, 2, 3)
    colors(root / "vkitti_1.3.1_scenegt/0001/fog/00000.png", bad)

    info = convert("vkitti1", root, tmp_path / "out", protocol="10", on_error="skip")
    ids = {name: info.classes.names.index(name) for name in ("road", "sky", "car")}
    want = np.full((H, W), ids["road"])
    want[:4] = ids["sky"]
    want[4:8, :24] = ids["car"]                     # both car instances and the van
    want[4:8, 24:] = 255                            # guard rail: ignored, as in KITTI's labels
    row = rows(info)["vkitti1-0001-clone-00000"]
    np.testing.assert_array_equal(decode(row["label"]), want)
    assert np.all(decode(row["depth"]) == 2500) and info.classes.num_classes == 10
    assert skipped(info.path) == {str(root / "vkitti_1.3.1_scenegt/0001/fog/00000.png"):
                                  f"unknown label colours [(1, 2, 3)] (not in {root / 'vkitti_1.3.1_scenegt/0001_fog_scenegt_rgb_encoding.txt'})"}
    assert info.source["mapping"]["Van"] == ids["car"] and info.source["mapping"]["GuardRail"] == 255
    assert [s["id"] for s in get_kind("vkitti1").samples(root, "fog", {})] == ["vkitti1-0001-fog-00000"]


def test_vkitti2_decodes_the_documented_colours_or_a_scenes_colors_txt_and_keeps_jpegs(ray_session, tmp_path):
    root = tmp_path / "vkitti2"
    gt = np.zeros((H, W, 3), np.uint8)
    gt[:] = (100, 60, 100)                          # Road
    gt[:, W // 2:] = (255, 127, 80)                 # Car
    for scene in ("Scene01", "Scene02"):
        frames = root / scene / "clone/frames"
        frames.joinpath("rgb/Camera_0").mkdir(parents=True)
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(frames / "rgb/Camera_0/rgb_00000.jpg", quality=90)
        depth16(frames / "depth/Camera_0/depth_00000.png", np.full((H, W), 1200))
    colors(root / "Scene01/clone/frames/classSegmentation/Camera_0/classgt_00000.png", gt)
    scene2 = gt.copy()
    scene2[:, : W // 2] = (1, 1, 1)                 # this scene's colors.txt says Road is 1,1,1
    colors(root / "Scene02/clone/frames/classSegmentation/Camera_0/classgt_00000.png", scene2)
    (root / "Scene02/clone/colors.txt").write_text("Category r g b\nRoad 1 1 1\nCar 255 127 80\n")

    info = convert("vkitti2", root, tmp_path / "out")
    got = rows(info)
    for scene in ("Scene01", "Scene02"):
        row = got[f"vkitti2-{scene}-clone-Camera_0-00000"]
        np.testing.assert_array_equal(decode(row["label"]), halves(0, 13))
        assert np.all(decode(row["depth"]) == 1200)
        assert row["image"] == (root / scene / "clone/frames/rgb/Camera_0/rgb_00000.jpg").read_bytes()


def test_kitti_training_has_labels_and_testing_has_none(ray_session, tmp_path):
    root = tmp_path / "data_semantics"
    rgb(root / "training/image_2/000000_10.png"), ids8(root / "training/semantic/000000_10.png", halves(21, 27))
    rgb(root / "testing/image_2/000000_10.png")
    training = convert("kitti", tmp_path, tmp_path / "training", protocol="10")  # the archive's parent folder works too
    np.testing.assert_array_equal(decode(rows(training)["kitti-000000_10"]["label"]),
                                  halves(PROTOCOLS["10"].index(8), PROTOCOLS["10"].index(14)))
    testing = convert("kitti", root, tmp_path / "testing", split="testing")
    assert not testing.has_labels and rows(testing)["kitti-000000_10"]["label"] is None


def test_folder_with_the_cirrus_class_map_labels_and_depth(ray_session, tmp_path):
    root = tmp_path / "renders"
    rgb(root / "images/a.png", 1), ids8(root / "labels/a.png", halves(0, 255)), depth16(root / "depth/a.png", np.full((H, W), 300))
    (root / "images/sub").mkdir()
    Image.fromarray(np.full((H, W, 3), 2, np.uint8)).save(root / "images/sub/b.jpg")
    ids8(root / "labels/sub/b.png", np.zeros((H, W))), depth16(root / "depth/sub/b.png", np.zeros((H, W)))
    rgb(root / "images/c.png"), ids8(root / "labels/c.png", np.full((H, W), 128)), depth16(root / "depth/c.png", np.zeros((H, W)))
    (root / "images/notes.txt").write_text("not an image")
    (root / "images/.DS_Store").write_bytes(b"\0")

    cmap = REPO / "jobs/configs/cirrus/classes.yaml"
    info = convert("folder", root, tmp_path / "out", classes=str(cmap), domain="synthetic", on_error="skip")
    assert info.classes.names == ("clear", "cirrus") and info.classes.protocol == "custom"
    assert info.domain == "synthetic" and info.name == "renders" and info.has_depth
    got = rows(info)
    np.testing.assert_array_equal(decode(got["a"]["label"]), halves(0, 1))
    assert np.all(decode(got["a"]["depth"]) == 300) and np.all(decode(got["sub/b"]["label"]) == 0)
    assert info.class_pixels == [H * W + H * W // 2, H * W // 2]
    assert skipped(info.path) == {str(root / "images/notes.txt"): "unreadable image (not an image file)",
                                  str(root / "labels/c.png"): "unknown label values [128] (known: 0, 255)"}

    rgb(tmp_path / "photos/images/p.png")  # unlabeled real images: the same class set, no labels
    photos = convert("folder", tmp_path / "photos", tmp_path / "photos_out", classes=str(cmap))
    assert photos.classes == info.classes and photos.domain == "real" and not photos.has_labels and not photos.has_depth
    assert rows(photos)["p"]["label"] is None


def test_folder_class_maps_colours_protocol_names_and_their_errors(tmp_path):
    f = tmp_path / "map.yaml"
    f.write_text('labels:\n  "128,64,128": road\n  "0,0,142": car\n  "0,0,0": ignore\n')
    classes, mapping = class_map("16", {"classes": str(f)})
    assert classes.protocol == "16" and mapping == {(128, 64, 128): 0, (0, 0, 142): PROTOCOLS["16"].index(13), (0, 0, 0): 255}
    for text, error in (
        ("labels:\n  0: raod\n", r"labels: 0 -> 'raod' is not a class"),
        ("labels:\n  0: road\n  '1,2,3': car\n", r"labels: mixes values and 'r,g,b' colours"),
        ("labels:\n  300: road\n", r"labels: key 300 is neither a value 0\.\.255 nor an 'r,g,b' colour"),
        ("classes: [clear]\nlabels:\n  0: clear\n", r"classes: expected a list of \{name: str, color: \[r, g, b\]\}"),
        ("label:\n  0: road\n", r"expected a mapping with 'labels'"),
    ):
        f.write_text(text)
        with pytest.raises(ConvertError, match=f"^{f}: " + error):
            class_map(None, {"classes": str(f)})
    f.write_text("classes:\n  - {name: a, color: [0, 0, 0]}\nlabels:\n  0: a\n")
    with pytest.raises(ValueError, match=r"--protocol 19 does not apply: .* defines its own classes"):
        class_map("19", {"classes": str(f)})
    rgb(tmp_path / "photos/images/x.png"), ids8(tmp_path / "photos/labels/x.png", np.zeros((H, W)))
    with pytest.raises(ValueError, match=r"labels exists: pass --classes FILE\.yaml"):
        convert("folder", tmp_path / "photos", tmp_path / "out")
    rgb(tmp_path / "dups/images/x.png"), rgb(tmp_path / "dups/images/x.jpg")
    with pytest.raises(ConvertError, match=r"x\.png: gives the same sample id 'x' as .*x\.jpg"):
        convert("folder", tmp_path / "dups", tmp_path / "out")
