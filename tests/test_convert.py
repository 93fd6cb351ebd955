"""``gemini-pl convert``: each provider's format written byte for byte, converted, checked value by value.

The source files are written here as the providers distribute them (a headerless 12-bit
big-endian JSRT ``.IMG``, SCR GIF masks, NRRD with ``space directions``, MetaImage ``.mhd`` +
``.raw``, a DICOM series with its orientation and position tags, MM-WHS / KiPA22 / CANDI NIfTI,
the ChestX-ray8 archives and CSV); every expected value below is computed by hand.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from gemini_pl.cli import main as cli_main
from gemini_pl.data.convert import convert
from gemini_pl.data.convert.base import Item, Source, assign_test, sha256_file
from gemini_pl.data.convert.scr import CHANNELS, ORGANS


def run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli_main(["convert", *args, "--no-progress"])
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def nifti(path: Path) -> np.ndarray:
    """Array in sitk (z, y, x) order."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_nifti(path: Path, arr_xyz: np.ndarray, spacing=(0.8, 0.8, 1.5), origin=(-10.0, 5.0, 2.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    nib.save(nib.Nifti1Image(arr_xyz, aff), str(path))


# ------------------------------------------------------------------------------------------ --help
def test_help_lists_every_dataset(capsys):
    code, out = run(capsys, "--help")
    assert code == 0
    for name in ("whs_ct", "asoca", "cat08", "kipa22", "candi", "ppmi", "chestxray8", "scr"):
        assert f"\n  {name} " in out, name
    assert "--force" in out and "--src" in out and "--root" in out


# ------------------------------------------------------------------------------------------ SCR / JSRT
def write_jsrt(path: Path, stored: np.ndarray) -> None:
    """A JSRT image as distributed: 2048 x 2048 16-bit words, big-endian, no header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert stored.shape == (2048, 2048)
    path.write_bytes(stored.astype(">u2").tobytes())


def write_gif(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask > 0).astype(np.uint8) * 255, mode="L").save(path, format="GIF")


def scr_source(src: Path) -> dict:
    stored = np.full((2048, 2048), 2048, np.uint16)
    stored[0:2, 0:2] = 4095            # brightest stored value -> 0 after the polarity turn
    stored[0:2, 2:4] = 0               # -> 255
    stored[2:4, 0:2] = [[1000, 1002], [1004, 1006]]   # block mean 1003 -> round(3092*255/4095) = 193
    write_jsrt(src / "All247images/JPCLN001.IMG", stored)
    write_jsrt(src / "All247images/JPCNN002.IMG", np.full((2048, 2048), 100, np.uint16))
    boxes = {"heart": (300, 400, 400, 600), "left lung": (100, 500, 550, 900), "right lung": (100, 500, 100, 450),
             "left clavicle": (50, 80, 600, 900), "right clavicle": (50, 80, 100, 400)}
    masks = {}
    for organ in ORGANS:
        m = np.zeros((1024, 1024), np.uint8)
        r0, r1, c0, c1 = boxes[organ]
        m[r0:r1, c0:c1] = 1
        masks[organ] = m
        write_gif(src / f"scratch/fold1/masks/{organ}/JPCLN001.gif", m)
        write_gif(src / f"scratch/fold2/masks/{organ}/JPCNN002.gif", m)
    return masks


def test_scr_jsrt_values_polarity_and_mask_merge(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    masks = scr_source(src)
    code, out = run(capsys, "scr", "--src", str(src), "--root", str(root))
    d = root / "scr"
    img = png(d / "train/labeled/image/JPCLN001.png")
    assert img.shape == (1024, 1024) and img.dtype == np.uint8
    assert img[0, 0] == 0 and img[0, 1] == 255 and img[1, 0] == 193
    assert img[500, 500] == 127  # stored 2048: floor(2047 * 255 / 4095 + 0.5)
    assert (png(d / "test/labeled/image/JPCNN002.png") == 249).all()  # floor(3995*255/4095+.5) = 249
    lung = png(d / "train/labeled/label/lung/JPCLN001.png")
    assert set(np.unique(lung)) == {0, 255}
    assert np.array_equal(lung > 0, (masks["left lung"] | masks["right lung"]) > 0)
    clav = png(d / "train/labeled/label/clavicle/JPCLN001.png")
    assert np.array_equal(clav > 0, (masks["left clavicle"] | masks["right clavicle"]) > 0)
    assert np.array_equal(png(d / "train/labeled/label/heart/JPCLN001.png") > 0, masks["heart"] > 0)
    assert (d / "test/labeled/label/heart/JPCNN002.png").is_file()  # fold 2 -> test
    rec = json.loads((d / "convert.json").read_text())
    entry = rec["files"]["train/labeled/image/JPCLN001.png"]
    assert entry["sources"][0] == "All247images/JPCLN001.IMG"
    assert rec["sources"]["All247images/JPCLN001.IMG"]["sha256"] == sha256_file(src / "All247images/JPCLN001.IMG")
    assert entry["sha256"] == sha256_file(d / "train/labeled/image/JPCLN001.png")
    assert "4095 - v" in entry["steps"]
    assert "OK: no problems found" in out, out
    assert "2 of the 247 cases" in out
    assert code == 0, out
    assert list(CHANNELS) == ["heart", "lung", "clavicle"]


def test_scr_bad_files_reported_file_by_file(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    scr_source(src)
    short = src / "All247images/JPCLN003.IMG"
    short.write_bytes(b"\x00" * 1000)
    for organ in ORGANS:
        write_gif(src / f"scratch/fold1/masks/{organ}/JPCLN003.gif", np.zeros((1024, 1024)))
    os.remove(src / "scratch/fold2/masks/right clavicle/JPCNN002.gif")
    code, out = run(capsys, "scr", "--src", str(src), "--root", str(root), "--no-check")
    assert code == 1
    assert f"{short}: 1000 bytes, but a JSRT image is 2048 x 2048 16-bit big-endian = 8388608 bytes" in out
    assert "JPCNN002.IMG: no SCR right clavicle mask (expected .../masks/right clavicle/JPCNN002.gif)" in out
    assert (root / "scr/train/labeled/image/JPCLN001.png").is_file()  # the good case was converted
    assert not (root / "scr/train/labeled/image/JPCLN003.png").exists()


# ------------------------------------------------------------------------------------------ MM-WHS
def whs_source(src: Path) -> None:
    for num in (1001, 1002):
        img = np.full((6, 5, 4), -1000, np.int16)
        img[2, 3, 1] = 40 + num - 1001
        lab = np.zeros((6, 5, 4), np.int16)
        lab[1:3, 1:3, 1:3] = 205
        lab[3:5, 1:3, 1:3] = 500
        write_nifti(src / f"ct_train/ct_train_{num}_image.nii.gz", img)
        write_nifti(src / f"ct_train/ct_train_{num}_label.nii.gz", lab)
    for num, value in ((2001, 24), (2002, 30)):
        write_nifti(src / f"ct_test/ct_test_{num}_image.nii.gz", np.full((6, 5, 4), value, np.int16))


def test_whs_hu_shift_labels_and_names(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    whs_source(src)
    code, out = run(capsys, "whs_ct", "--src", str(src), "--root", str(root))
    d = root / "whs_ct"
    img = nifti(d / "train/labeled/image/ct_train_1001.nii.gz")
    assert img.min() == 24 and img[1, 3, 2] == 1064  # HU -1000 -> 24, 40 -> 1064 (sitk order z, y, x)
    lab = nifti(d / "train/labeled/label/ct_train_1001.nii.gz")
    assert sorted(np.unique(lab)) == [0, 205, 500]
    # already shifted (minimum 24 >= -200): copied byte for byte
    t = d / "train/unlabeled/image/ct_test_2001.nii.gz"
    assert sha256_file(t) == sha256_file(src / "ct_test/ct_test_2001_image.nii.gz")
    ref = sitk.ReadImage(str(src / "ct_train/ct_train_1001_image.nii.gz"))
    out_img = sitk.ReadImage(str(d / "train/labeled/image/ct_train_1001.nii.gz"))
    assert out_img.GetSpacing() == pytest.approx(ref.GetSpacing()) and out_img.GetOrigin() == pytest.approx(ref.GetOrigin())
    assert code == 0, out
    assert "label values found: [0, 205, 500]" in out


def test_idempotent_rerun_force_and_changed_source(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    whs_source(src)
    d = root / "whs_ct"
    res = convert("whs_ct", src, root)
    assert len(res.written) == 6 and res.ok
    out = d / "train/labeled/image/ct_train_1001.nii.gz"
    mtime = out.stat().st_mtime_ns
    res = convert("mmwhs", src, root)  # the alias names the same dataset
    assert res.written == [] and res.replaced == [] and len(res.unchanged) == 6
    assert out.stat().st_mtime_ns == mtime
    # an output edited by hand is never overwritten without --force
    write_nifti(out, np.zeros((6, 5, 4), np.int16))
    edited = sha256_file(out)
    res = convert("whs_ct", src, root)
    assert not res.ok and len(res.conflicts) == 1 and str(out) in res.conflicts[0]
    assert sha256_file(out) == edited
    res = convert("whs_ct", src, root, force=True)
    assert "train/labeled/image/ct_train_1001.nii.gz" in res.replaced and res.ok
    assert nifti(out).min() == 24
    # a changed source: its outputs (untouched since the last run) are rebuilt
    lab = np.zeros((6, 5, 4), np.int16)
    lab[0, 0, 0] = 850
    write_nifti(src / "ct_train/ct_train_1002_label.nii.gz", lab)
    res = convert("whs_ct", src, root)
    assert res.replaced == ["train/labeled/label/ct_train_1002.nii.gz"] and res.ok
    assert sorted(np.unique(nifti(d / "train/labeled/label/ct_train_1002.nii.gz"))) == [0, 850]
    # --verify re-hashes: an output changed behind the record's back (same size and mtime) is found
    st = out.stat()
    data = bytearray(out.read_bytes())
    data[-1] ^= 1
    out.write_bytes(bytes(data))
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert convert("whs_ct", src, root).conflicts == []  # size and mtime unchanged: trusted
    res = convert("whs_ct", src, root, verify=True)
    assert len(res.conflicts) == 1 and str(out) in res.conflicts[0]
    convert("whs_ct", src, root, force=True, verify=True)
    # other settings convert every case again: plain HU kept with --ct-offset 0
    res = convert("whs_ct", src, root, ct_offset=0)
    assert "train/labeled/image/ct_train_1001.nii.gz" in res.replaced and res.ok
    assert nifti(out).min() == -1000
    assert json.loads((d / "convert.json").read_text())["settings"] == {"ct_offset": 0}
    # an existing file with the same bytes (e.g. a copy made by hand) is adopted, not refused
    shutil.rmtree(root)
    (d / "train/unlabeled/image").mkdir(parents=True)
    shutil.copyfile(src / "ct_test/ct_test_2001_image.nii.gz", d / "train/unlabeled/image/ct_test_2001.nii.gz")
    res = convert("whs_ct", src, root)
    assert res.ok and "train/unlabeled/image/ct_test_2001.nii.gz" in res.unchanged


def test_partial_source_missing_and_duplicate_reported(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    whs_source(src)
    os.remove(src / "ct_train/ct_train_1002_label.nii.gz")
    (src / "copy").mkdir()
    shutil.copyfile(src / "ct_test/ct_test_2001_image.nii.gz", src / "copy/ct_test_2001_image.nii.gz")
    (src / "ct_train/ct_train_17_image.nii.gz").write_bytes(b"x")
    shutil.copyfile(src / "ct_test/ct_test_2002_image.nii.gz", src / "ct_test/ct_test_2003_image.nii.gz")
    code, out = run(capsys, "whs_ct", "--src", str(src), "--root", str(root), "--no-check")
    assert code == 1
    assert f"{src / 'ct_train/ct_train_1002_image.nii.gz'}: no label (expected " \
           f"{src / 'ct_train/ct_train_1002_label.nii.gz'})" in out
    assert "case ct_test_2001: 2 image files" in out and str(src / "copy/ct_test_2001_image.nii.gz") in out
    assert f"{src / 'ct_train/ct_train_17_image.nii.gz'}: not an MM-WHS CT file name (expected " in out
    assert ("ct_test/ct_test_2002_image.nii.gz, ct_test/ct_test_2003_image.nii.gz: identical files "
            "(one case under 2 names?)") in out
    assert (root / "whs_ct/train/labeled/label/ct_train_1001.nii.gz").is_file()
    rec = json.loads((root / "whs_ct/convert.json").read_text())
    assert any("ct_train_1002" in p for p in rec["problems"])


# ------------------------------------------------------------------------------------------ ASOCA (NRRD)
def write_nrrd(path: Path, arr_xyz: np.ndarray, type_: str, directions: str, origin: str) -> None:
    """A NRRD as ASOCA distributes it: text header, blank line, raw little-endian data (x fastest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"NRRD0004\ntype: {type_}\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {' '.join(str(s) for s in arr_xyz.shape)}\nspace directions: {directions}\n"
              f"kinds: domain domain domain\nendian: little\nencoding: raw\nspace origin: {origin}\n\n")
    dtype = {"short": "<i2", "unsigned char": "u1"}[type_]
    path.write_bytes(header.encode() + arr_xyz.astype(dtype).tobytes(order="F"))


def test_asoca_nrrd_space_directions_kept(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    img = np.full((4, 3, 2), -1000, np.int16)
    img[1, 2, 1] = 300
    lab = np.zeros((4, 3, 2), np.uint8)
    lab[1, 2, 1] = 1
    dirs, origin = "(0,0.5,0) (0.7,0,0) (0,0,2)", "(10,20,30)"
    write_nrrd(src / "Normal/CTCA/Normal_1.nrrd", img, "short", dirs, origin)
    write_nrrd(src / "Normal/Annotations/Normal_1.nrrd", lab, "unsigned char", dirs, origin)
    img2 = img.copy()
    img2[0, 0, 0] = 10
    write_nrrd(src / "Normal/Testset_Normal/0.nrrd", img2, "short", dirs, origin)
    code, out = run(capsys, "asoca", "--src", str(src), "--root", str(root), "--no-check")
    d = root / "asoca"
    o = sitk.ReadImage(str(d / "train/labeled/image/Normal_1.nii.gz"))
    assert o.GetSpacing() == pytest.approx((0.5, 0.7, 2.0))
    assert o.GetDirection() == pytest.approx((0, 1, 0, 1, 0, 0, 0, 0, 1))  # columns = axis directions (LPS)
    assert o.GetOrigin() == pytest.approx((10, 20, 30))
    aff = nib.load(str(d / "train/labeled/image/Normal_1.nii.gz")).affine  # the same in RAS
    assert aff[:3, 3] == pytest.approx([-10, -20, 30])
    assert aff[:3, 0] == pytest.approx([0, -0.5, 0]) and aff[:3, 1] == pytest.approx([-0.7, 0, 0])
    a = sitk.GetArrayFromImage(o)  # (z, y, x)
    assert a[1, 2, 1] == 1324 and a.min() == 24  # HU + 1024
    la = nifti(d / "train/labeled/label/Normal_1.nii.gz")
    assert la[1, 2, 1] == 1 and la.sum() == 1
    assert (d / "train/unlabeled/image/Normal_test_0.nii.gz").is_file()
    assert code == 0, out  # a short source is a note (2 of the 60 cases), not a problem
    assert "2 of the 60 cases" in out


# ------------------------------------------------------------------------------------------ CAT08 (MetaImage)
def write_mhd(folder: Path, num: str, arr_xyz: np.ndarray, matrix: str, offset: str, spacing: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"image{num}.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"CompressedData = False\nTransformMatrix = {matrix}\nOffset = {offset}\nCenterOfRotation = 0 0 0\n"
        f"ElementSpacing = {spacing}\nDimSize = {' '.join(str(s) for s in arr_xyz.shape)}\n"
        f"ElementType = MET_SHORT\nElementDataFile = image{num}.raw\n")
    (folder / f"image{num}.raw").write_bytes(arr_xyz.astype("<i2").tobytes(order="F"))


def test_cat08_metaimage_geometry_and_missing_raw(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    arr = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3) + 10  # already shifted: min 10
    write_mhd(src / "dataset00", "00", arr, "-1 0 0 0 1 0 0 0 1", "-50 -60 70", "0.4 0.4 0.5")
    write_mhd(src / "dataset01", "01", arr, "1 0 0 0 1 0 0 0 1", "0 0 0", "1 1 1")
    os.remove(src / "dataset01/image01.raw")
    code, out = run(capsys, "cat08", "--src", str(src), "--root", str(root), "--no-check")
    o = sitk.ReadImage(str(root / "cat08/train/unlabeled/image/cat08_00.nii.gz"))
    assert o.GetDirection() == pytest.approx((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert o.GetOrigin() == pytest.approx((-50, -60, 70)) and o.GetSpacing() == pytest.approx((0.4, 0.4, 0.5))
    a = sitk.GetArrayFromImage(o)
    assert a[2, 3, 4] == arr[4, 3, 2] and a.min() == 10  # no shift: not in plain HU
    assert f"{src / 'dataset01/image01.mhd'}: its data file {src / 'dataset01/image01.raw'} is missing" in out
    assert code == 1


# ------------------------------------------------------------------------------------------ PPMI (DICOM)
def write_dicom_series(folder: Path, vol, patient: str, uid: str) -> None:
    """One DICOM file per slice with ImageOrientationPatient / ImagePositionPatient (SimpleITK's
    GDCM writer, as scanners write them)."""
    import locale

    folder.mkdir(parents=True, exist_ok=True)
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets the C locale (ASCII file reads after it)
    try:
        _write_dicom_series(folder, vol, patient, uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(folder: Path, vol, patient: str, uid: str) -> None:
    d = vol.GetDirection()
    iop = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.GetDepth()):
        sl = vol[:, :, k]
        pos = vol.TransformIndexToPhysicalPoint((0, 0, k))
        for key, value in (("0010|0020", patient), ("0008|103e", "MPRAGE GRAPPA"), ("0008|0060", "MR"),
                           ("0020|000d", uid + ".1"), ("0020|000e", uid + ".2"), ("0020|0037", iop),
                           ("0020|0032", "\\".join(str(v) for v in pos)), ("0020|0013", str(k + 1)),
                           ("0008|0018", f"{uid}.3.{k + 1}"), ("0028|0030", f"{vol.GetSpacing()[1]}\\{vol.GetSpacing()[0]}"),
                           ("0018|0050", str(vol.GetSpacing()[2]))):
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(sl)


def test_ppmi_dicom_series_orientation_and_patient_groups(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    arr = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 3).astype(np.int16)  # (z, y, x)
    vol = sitk.GetImageFromArray(arr)
    vol.SetSpacing((1.2, 1.1, 2.5))
    # rows along +y, columns along -z, slices along row x column = (-1, 0, 0)
    vol.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    vol.SetOrigin((40.0, -20.0, 60.0))
    base = src / "PPMI/3001/MPRAGE_GRAPPA"
    write_dicom_series(base / "2014-03-10_10_25_03.0/I111111", vol, "3001", "1.2.826.0.1.3680043.2.1125.1")
    write_dicom_series(base / "2015-04-04_09_58_25.0/I222222", vol, "3001", "1.2.826.0.1.3680043.2.1125.2")
    code, out = run(capsys, "ppmi", "--src", str(src), "--root", str(root))
    d = root / "brain"
    o = sitk.ReadImage(str(d / "3001_I111111.nii.gz"))
    assert o.GetDirection() == pytest.approx((0, 0, -1, 1, 0, 0, 0, -1, 0), abs=1e-5)
    assert o.GetSpacing() == pytest.approx((1.2, 1.1, 2.5), abs=1e-4)
    assert o.GetOrigin() == pytest.approx((40.0, -20.0, 60.0), abs=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(o), arr)
    rec = json.loads((d / "convert.json").read_text())
    assert rec["groups"] == {"3001_I111111": "3001", "3001_I222222": "3001"}
    assert len(rec["files"]["3001_I111111.nii.gz"]["sources"]) == 4
    assert code == 0, out
    assert "train_unlabeled: 2 image(s)" in out and "OK: no problems found" in out


# ------------------------------------------------------------------------------------------ ChestX-ray8
def png_bytes(arr: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_chestxray8_groups_from_csv_and_archives(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    gray = np.full((16, 16), 77, np.uint8)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 255
    a1 = {"images/00000001_000.png": png_bytes(gray, "L"), "images/00000001_001.png": png_bytes(gray + 1, "L"),
          "images/00000009_000.png": png_bytes(gray, "L")}
    a2 = {"images/00000002_000.png": png_bytes(rgba, "RGBA"), "images/00000004_000.png": png_bytes(gray, "L")}
    write_tar(src / "images_001.tar.gz", a1)
    write_tar(src / "images_002.tar.gz", {**a2, "images/00000004_000.png": png_bytes(gray, "L")})
    write_tar(src / "images_003.tar.gz", {"images/00000004_000.png": png_bytes(gray, "L")})
    rows = [("00000001_000.png", "1", "M", "PA"), ("00000001_001.png", "1", "M", "AP"),
            ("00000002_000.png", "2", "F", "PA"), ("00000003_000.png", "3", "F", "AP"),
            ("00000004_000.png", "4", "F", "AP")]
    with open(src / "Data_Entry_2017.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                    "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                    "OriginalImagePixelSpacing[x", "y]"])
        for name, pid, sex, view in rows:
            w.writerow([name, "No Finding", "0", pid, "50", sex, view, "2500", "2048", "0.143", "0.143"])
    code, out = run(capsys, "chestxray8", "--src", str(src), "--root", str(root), "--no-check")
    d = root / "chestxray"
    assert (d / "PA_M/00000001_000.png").read_bytes() == a1["images/00000001_000.png"]  # bytes as distributed
    assert (png(d / "AP_M/00000001_001.png") == 78).all()
    g = png(d / "PA_F/00000002_000.png")
    assert g.ndim == 2 and (g == 124).all()  # luma of (200, 100, 50): (200*19595 + 100*38470 + 50*7471 + 32768) >> 16
    assert code == 1
    assert "Data_Entry_2017.csv:5: 00000003_000.png is in no archive or folder" in out
    assert "images_001.tar.gz:images/00000009_000.png: not listed in Data_Entry_2017.csv" in out
    assert "AP_F/00000004_000.png: 2 copies of case 00000004_000" in out
    assert not (d / "AP_F/00000004_000.png").exists()
    rec = json.loads((d / "convert.json").read_text())
    assert rec["groups"]["00000001_001"] == "1"
    assert rec["files"]["PA_M/00000001_000.png"]["sources"] == ["images_001.tar.gz:images/00000001_000.png",
                                                               "Data_Entry_2017.csv"]
    # rerun: nothing is read again from the archives (all unchanged)
    res = convert("chestxray8", src, root)
    assert res.written == [] and len(res.unchanged) == 3
    # an archive extracted next to itself: the extracted file is used, not reported as a second copy
    (src / "images").mkdir()
    (src / "images/00000002_000.png").write_bytes(a2["images/00000002_000.png"])
    res = convert("chestxray8", src, root)
    assert not any("00000002_000" in p for p in res.problems) and res.unchanged.count("PA_F/00000002_000.png") == 1
    assert any("1 image(s) are both extracted and in an archive" in line for line in res.lines)


# ------------------------------------------------------------------------------------------ KiPA22, CANDI
def test_kipa22_parts_and_label_codes(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "data"
    for part, names in (("train", ("1", "2")), ("open_test", ("71",))):
        for n in names:
            img = np.full((5, 5, 5), 0, np.int16)
            img[2, 2, 2] = 1500
            lab = np.zeros((5, 5, 5), np.uint8)
            lab[0, 0, :4] = [1, 2, 3, 4]
            write_nifti(src / part / "image" / f"{n}.nii.gz", img)
            write_nifti(src / part / "label" / f"{n}.nii.gz", lab)
    os.remove(src / "train/label/2.nii.gz")
    code, out = run(capsys, "kipa22", "--src", str(src), "--root", str(root), "--no-check")
    d = root / "kipa22"
    assert sorted(np.unique(nifti(d / "train/labeled/label/1.nii.gz"))) == [0, 1, 2, 3, 4]
    assert nifti(d / "test/labeled/image/71.nii.gz")[2, 2, 2] == 1500  # min 0: already shifted, kept
    assert f"{src / 'train/image/2.nii.gz'}: no label (expected {src / 'train/label/2.nii.gz'})" in out
    assert code == 1


def test_candi_codes_masks_and_patient_level_test_split(tmp_path, capsys):
    src, root, masks = tmp_path / "src", tmp_path / "data", tmp_path / "masks"
    subjects = ["HC_001", "HC_002", "BPDwoPsy_030", "SS_084"]
    for i, s in enumerate(subjects):
        img = np.zeros((6, 6, 6), np.float32)
        img[1:5, 1:5, 1:5] = 80.0 + i
        seg = np.zeros((6, 6, 6), np.int16)
        seg[1:3, 1:5, 1:5], seg[3:5, 1:5, 1:5], seg[1, 1, 1] = 2, 41, 5
        write_nifti(src / "SchizBull_2008" / s.split("_")[0] / s / f"{s}_procimg.nii.gz", img)
        write_nifti(src / "SchizBull_2008" / s.split("_")[0] / s / f"{s}_seg.nii.gz", seg)
        write_nifti(masks / f"{s}.nii.gz", (seg > 0).astype(np.int16) * 7)
    code, out = run(capsys, "candi", "--src", str(src), "--root", str(root), "--masks", str(masks), "--num-test", "1")
    d = root / "candi"
    train = sorted(p.name for p in (d / "train/labeled/image").iterdir())
    test = sorted(p.name for p in (d / "test/labeled/image").iterdir())
    assert len(train) == 3 and len(test) == 1 and not set(train) & set(test)
    t = test[0]
    assert (d / "test/labeled/mask" / t).is_file() and (d / "test/labeled/label" / t).is_file()
    assert sorted(np.unique(nifti(d / "test/labeled/label" / t))) == [0, 2, 5, 41]  # FreeSurfer codes kept
    assert sorted(np.unique(nifti(d / "test/labeled/mask" / t))) == [0, 1]  # 7 -> 1
    assert code == 0, out


def test_test_split_never_splits_a_patient():
    def item(case, group):
        return Item((f"train/labeled/image/{case}.nii.gz", f"train/labeled/label/{case}.nii.gz"),
                    (Source(Path(case)),), lambda p, d: "", case=case, group=group)

    for seed in range(6):
        items = [item(f"a{i}", "A") for i in range(3)] + [item("b0", "B")] + [item(f"c{i}", "C") for i in range(2)]
        items, notes = assign_test(items, 2, seed)
        split = {}
        for it in items:
            split.setdefault(it.group, set()).add(it.outputs[0].split("/")[0])
            assert it.outputs[0].split("/")[0] == it.outputs[1].split("/")[0]
        assert all(len(s) == 1 for s in split.values()), split
        assert sum(1 for it in items if it.outputs[0].startswith("test/")) >= 2


def test_outputs_no_case_makes_any_more_are_reported(tmp_path):
    src, root = tmp_path / "src", tmp_path / "data"
    whs_source(src)
    assert convert("whs_ct", src, root).ok
    res = convert("whs_ct", src, root, num_test=1, seed=0)  # one labeled case moves to test/labeled
    moved = [o for o in res.written if o.startswith("test/labeled/image/")]
    assert len(moved) == 1
    stale = root / "whs_ct" / moved[0].replace("test/labeled", "train/labeled")
    assert not res.ok and any(p.startswith(f"{stale}: written by an earlier conversion") for p in res.problems)
    stale.unlink()
    (stale.parent.parent / "label" / stale.name).unlink()
    assert convert("whs_ct", src, root, num_test=1, seed=0).ok


# ------------------------------------------------------------------------------------------ walkthroughs
REPO = Path(__file__).resolve().parents[1]
SMALL = ["--model.init_args.widths", "[8, 8, 16, 16, 16, 16, 16, 8, 8]"]
QUICK = ["--trainer.max_steps", "1", "--trainer.accelerator", "cpu", "--data.init_args.num_workers", "0",
         "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--data.init_args.cache", "false"]


def gemini_pl(*args: str) -> None:
    try:
        cli_main(list(args))
    except SystemExit as exc:
        assert exc.code in (0, None), f"gemini-pl {args[0]} exited with {exc.code}"


@pytest.mark.slow
def test_walkthrough_2d_scr_download_to_fit(tmp_path, monkeypatch):
    """data/README.md, SCR: the JSRT + SCR download -> convert -> check-data -> fit (gemini_seg)."""
    from gemini_pl.data.splits import _main as make_split_file

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    download = tmp_path / "downloads/jsrt_scr"
    for i, case in enumerate(["JPCLN001", "JPCLN003", "JPCLN005", "JPCNN007", "JPCNN009", "JPCNN011", "JPCNN013",
                              "JPCLN002"]):
        write_jsrt(download / "All247images" / f"{case}.IMG", rng.integers(0, 4096, (2048, 2048)).astype(np.uint16))
        for j, organ in enumerate(ORGANS):
            m = np.zeros((1024, 1024))
            m[100 + 60 * j: 300 + 60 * j + 10 * i, 100 + 90 * j: 400 + 90 * j] = 1
            write_gif(download / f"scratch/fold{1 if int(case[-3:]) % 2 else 2}/masks/{organ}/{case}.gif", m)
    gemini_pl("convert", "scr", "--src", str(download), "--root", "data", "--no-progress")
    # a handful of cases: 2 validation cases instead of the default 5 (the full SCR needs no such step)
    make_split_file(["--root", "data", "--dataset", "scr", "--num-val", "2"])
    gemini_pl("check-data", "--config", str(REPO / "experiments/data/scr.yaml"), "--data.root", "data",
              "--data.num_labeled", "null")
    gemini_pl("fit", "--config", str(REPO / "experiments/gemini_seg.yaml"), "--config",
              str(REPO / "experiments/data/scr.yaml"), "--data.root", "data", "--data.init_args.num_labeled", "null",
              "--data.init_args.preprocessing", "{intensity: xray, resize: [64, 64]}",
              "--trainer.default_root_dir", "runs/scr_seg", *QUICK, *SMALL)
    assert (tmp_path / "runs/scr_seg/checkpoints/last.ckpt").is_file()


@pytest.mark.slow
def test_walkthrough_3d_ppmi_download_to_fit(tmp_path, monkeypatch):
    """data/README.md, PPMI: DICOM series -> convert -> check-data -> fit (gemini_pretrain, 3D)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for k, (subject, image_id) in enumerate((("3001", "I101"), ("3001", "I102"), ("3002", "I201"))):
        vol = sitk.GetImageFromArray(rng.integers(0, 500, (8 + k, 12, 10)).astype(np.int16))
        vol.SetSpacing((1.0, 1.0, 1.2))
        write_dicom_series(tmp_path / f"downloads/PPMI_dicom/PPMI/{subject}/MPRAGE_GRAPPA/2014-0{k + 1}-10_10_25_03.0"
                           / image_id, vol, subject, f"1.2.826.0.1.3680043.2.1125.{k + 10}")
    gemini_pl("convert", "ppmi", "--src", "downloads/PPMI_dicom", "--root", "data", "--series", "MPRAGE|T1",
              "--no-progress")
    gemini_pl("check-data", "--config", str(REPO / "experiments/data/ppmi.yaml"), "--data.root", "data")
    gemini_pl("fit", "--config", str(REPO / "experiments/gemini_pretrain.yaml"), "--data.init_args.root", "data",
              "--data.init_args.preprocessing", "{spacing: [1, 1, 1], shape: [16, 16, 16]}",
              "--trainer.default_root_dir", "runs/ppmi_pretrain", *QUICK, *SMALL,
              "--model.init_args.deformer_widths", "[8, 8, 8, 8, 8]")
    assert (tmp_path / "runs/ppmi_pretrain/checkpoints/last.ckpt").is_file()


def test_usage_errors_are_one_line(tmp_path, capsys):
    code, out = run(capsys, "whs_ct", "--src", str(tmp_path / "nowhere"), "--root", str(tmp_path))
    assert code == 2 and f"gemini-pl convert: error: --src {tmp_path / 'nowhere'} is not a folder" in out
    code, out = run(capsys, "brats", "--src", str(tmp_path), "--root", str(tmp_path))
    assert code == 2 and "no converter for dataset 'brats'; known: whs_ct, asoca" in out
    code, out = run(capsys, "ppmi", "--src", str(tmp_path), "--root", str(tmp_path / "data"), "--series", "(")
    assert code == 2 and "--series '(' is not a regular expression" in out


def test_candi_unlabeled_cases_carry_their_label_as_brain_mask(tmp_path):
    src, root = tmp_path / "src", tmp_path / "data"
    for i, s in enumerate(["HC_001", "HC_002", "HC_003", "SS_084", "SS_085"]):
        img = np.zeros((6, 6, 6), np.float32)
        img[1:5, 1:5, 1:5] = 50.0 + i
        seg = np.zeros((6, 6, 6), np.int16)
        seg[1:5, 1:5, 1:5] = 41
        write_nifti(src / s / f"{s}_procimg.nii.gz", img)
        write_nifti(src / s / f"{s}_seg.nii.gz", seg)
    res = convert("candi", src, root, num_test=1, num_unlabeled=2, seed=3)
    assert res.ok, res.render()
    d = root / "candi"
    names = {k: sorted(p.name for p in (d / k / "image").iterdir())
             for k in ("train/unlabeled", "train/labeled", "test/labeled")}
    assert [len(v) for v in names.values()] == [2, 2, 1]
    assert len(set().union(*names.values())) == 5  # every subject in exactly one role
    assert sorted(p.name for p in (d / "train/unlabeled/label").iterdir()) == names["train/unlabeled"]
    assert not (d / "train/labeled/label" / names["train/unlabeled"][0]).exists()
    assert any("2 labeled training case(s) used as unlabeled images" in line for line in res.lines)


def test_images_into_another_dataset(tmp_path):
    """Semi T1: ASOCA and CAT08 images as unlabeled training images of WHS-CT."""
    root = tmp_path / "data"
    whs_source(tmp_path / "whs")
    assert convert("whs_ct", tmp_path / "whs", root).ok
    arr = np.arange(60, dtype=np.int16).reshape(5, 4, 3) - 1000
    write_mhd(tmp_path / "cat08/dataset00", "00", arr, "1 0 0 0 1 0 0 0 1", "0 0 0", "0.5 0.5 0.5")
    res = convert("cat08", tmp_path / "cat08", root, into="whs_ct")
    assert res.ok and res.written == ["train/unlabeled/image/cat08_00.nii.gz"]
    d = root / "whs_ct"
    assert nifti(d / "train/unlabeled/image/cat08_00.nii.gz").min() == 24
    img = np.full((4, 3, 2), -1000, np.int16)
    write_nrrd(tmp_path / "asoca/Normal/CTCA/Normal_1.nrrd", img, "short", "(1,0,0) (0,1,0) (0,0,1)", "(0,0,0)")
    write_nrrd(tmp_path / "asoca/Normal/Annotations/Normal_1.nrrd", img * 0, "unsigned char",
               "(1,0,0) (0,1,0) (0,0,1)", "(0,0,0)")
    res = convert("asoca", tmp_path / "asoca", root, into="whs_ct")
    assert res.ok and res.written == ["train/unlabeled/image/asoca_Normal_1.nii.gz"]  # the annotation left out
    assert not (d / "train/labeled/label/Normal_1.nii.gz").exists() and not (d / "train/labeled/image").joinpath(
        "Normal_1.nii.gz").exists()
    assert json.loads((d / "convert-asoca.json").read_text())["dataset"] == "asoca"
    assert convert("whs_ct", tmp_path / "whs", root).ok  # WHS's own record is its own
    assert not list(d.rglob(".tmp-*"))


def test_one_pair_names_the_missing_counterpart_or_the_copies():
    """The pairing every image+label converter shares: one of each, else one problem line."""
    from gemini_pl.data.convert.base import Plan

    p, img, lab = Plan(), Path("s/a_procimg.nii.gz"), Path("s/a_seg.nii.gz")
    words = ("subject", "segmentation")
    assert p.one_pair("a", [img], [lab], words, img, lab) == (img, lab) and p.problems == []
    assert p.one_pair("a", [img], [], words, None, lab) is None
    assert p.problems[-1] == f"{img}: no segmentation (expected {lab})"
    assert p.one_pair("a", [], [lab], words, img, None) is None
    assert p.problems[-1] == f"{lab}: segmentation without its image (expected {img})"
    copy = Path("t/a_procimg.nii.gz")
    assert p.one_pair("a", [img, copy], [lab], words, None, None) is None
    assert p.problems[-1] == (f"subject a: 2 image and 1 segmentation files ({img}, {copy}, {lab}); "
                              "none converted — keep one of each")
