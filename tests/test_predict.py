"""cutlass_resnet.predict: paths, batched classification against torchvision image by image, output files."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from conftest import make_image_folder, torchvision_alone

import cutlass_resnet
from cutlass_resnet.predict import (
    Result,
    Writer,
    classify,
    done_paths,
    expand_paths,
    load_features,
    read_image,
    read_results,
    save_features,
)


def test_expand_paths_reads_folders_lists_and_globs(tmp_path):
    images = make_image_folder(tmp_path / "photos", count=9)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# chosen\n{images[3]}\n\n  {images[1]}  \n{tmp_path / 'gone.jpg'}\n")
    folder = expand_paths([tmp_path / "photos"])
    assert folder == [str(p) for p in images]  # recursive, sorted, notes.txt left out, broken.jpg kept
    assert any("/sub/" in p for p in folder)
    assert expand_paths([f"@{listing}"]) == [str(images[3]), str(images[1]), str(tmp_path / "gone.jpg")]
    pngs = expand_paths([str(tmp_path / "photos" / "**" / "*.png")])
    assert pngs == sorted(str(p) for p in images if p.suffix == ".png") and pngs
    assert expand_paths([images[0], tmp_path / "photos"])[1:] == [str(p) for p in images[1:]]  # each path once


def test_classify_in_batches_matches_torchvision_image_by_image(ten_classes, image_folder):
    reference, folder = ten_classes
    model = cutlass_resnet.from_pretrained(folder)
    paths = expand_paths([image_folder])
    seen = []
    results = list(
        classify(paths, model, topk=10, batch_size=8, workers=2, features=True, decoder="pil", on_batch=seen.append)
    )
    assert [r.path for r in results] == paths and len(paths) == 41 and sum(seen) == 41
    (broken,) = [r for r in results if r.error is not None]
    assert broken.path.endswith("broken.jpg") and broken.top == [] and broken.features is None
    for result in results:
        if result.error is not None:
            continue
        probabilities, pooled = torchvision_alone(reference, result.path)
        assert [t["index"] for t in result.top] == probabilities.argsort(descending=True).tolist()
        ours = torch.tensor([t["probability"] for t in result.top])
        torch.testing.assert_close(ours, probabilities.sort(descending=True).values, atol=1e-5, rtol=1e-4)
        assert result.top[0]["label"] == f"class {result.top[0]['index']}"
        torch.testing.assert_close(result.features, pooled, atol=1e-4, rtol=1e-4)


def odd_images(folder):
    """A grayscale, a CMYK and an EXIF-rotated JPEG, a 16-bit PNG, a BMP and an animated GIF of the shipped photo."""
    import numpy as np
    from PIL import Image

    from cutlass_resnet.cli.predict import sample_image

    folder.mkdir()
    with Image.open(sample_image()) as photo:
        base = photo.convert("RGB")
    base.convert("L").save(folder / "gray.jpg")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    exif = base.getexif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to view
    base.save(folder / "exif.jpg", exif=exif)
    Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257).save(folder / "gray16.png")
    base.save(folder / "photo.bmp")
    base.save(folder / "animated.gif", save_all=True, append_images=[base.rotate(90)])
    return sorted(folder.iterdir())


def test_the_torchvision_decoder_predicts_as_the_pil_one(ten_classes, image_folder, tmp_path):
    """torchvision.io and v2 on uint8 (normalised where the model runs) against 0.1.0's PIL path, on the test
    folder and on grayscale, CMYK, EXIF-rotated, 16-bit, BMP and GIF files: the same top-1, the top-5
    probabilities within 1e-3 (the resize rounds each pixel by itself: at most one level apart), the same
    errors."""
    model = cutlass_resnet.from_pretrained(ten_classes[1])
    paths = [*expand_paths([image_folder]), *map(str, odd_images(tmp_path / "odd"))]
    pil, ours = (list(classify(paths, model, batch_size=8, decoder=d)) for d in ("pil", "torchvision"))
    for a, b in zip(pil, ours, strict=True):
        assert a.path == b.path and (a.error is None) == (b.error is None), a.path
        if a.error is None:
            assert a.top[0]["index"] == b.top[0]["index"], a.path
            for x, y in zip(a.top, b.top, strict=True):
                assert abs(x["probability"] - y["probability"]) <= 1e-3, a.path
    assert sum(r.error is not None for r in ours) == 1  # broken.jpg


def test_batched_decoding_where_the_model_runs_gives_what_the_workers_give(ten_classes, image_folder, tmp_path):
    """decoder="nvjpeg" (on a GPU, nvJPEG) run on the CPU: the workers read bytes, the JPEGs of a batch are
    decoded together by decode_jpeg on the model's device, the others on the CPU with one warning; the same
    results as the torchvision decoder, errors included."""
    model = cutlass_resnet.from_pretrained(ten_classes[1])
    paths = [*expand_paths([image_folder]), *map(str, odd_images(tmp_path / "odd"))]
    expected = list(classify(paths, model, batch_size=8, decoder="torchvision"))
    with pytest.warns(UserWarning, match="decoding on the CPU instead of cpu: not a JPEG") as caught:
        ours = list(classify(paths, model, batch_size=8, workers=2, decoder="nvjpeg"))
    assert len([w for w in caught if "not a JPEG" in str(w.message)]) == 1
    assert [(r.path, r.error is None, r.top) for r in ours] == [(r.path, r.error is None, r.top) for r in expected]


def test_a_short_batch_reuses_the_full_batch_s_graph(monkeypatch):
    """The last batch (or one with unreadable images dropped) is padded to the full batch: one capture, one
    memory pool, for any number of short batches; its results are its own rows."""
    import cutlass_resnet.predict as predict

    captured = []

    def capture(head, x):
        captured.append(tuple(x.shape))
        return head

    monkeypatch.setattr(predict, "cuda_graph", capture)
    head = predict._Head(cutlass_resnet.resnet18(num_classes=10).eval())
    graphs = predict._Graphs(head, batch_size=4)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        graphs(x)
        pooled, logits = graphs(x[:3])
        graphs(x[:1])
        expected = head(x[:3])[1]
    assert captured == [(4, 3, 32, 32)] and pooled.shape == (3, 512) and logits.shape == (3, 10)
    torch.testing.assert_close(logits, expected)


def test_classify_checks_topk(ten_classes, image_folder):
    model = cutlass_resnet.from_pretrained(ten_classes[1])
    with pytest.raises(ValueError, match="topk must be between 1 and 10"):
        list(classify([image_folder / "img01.png"], model, topk=11))


def test_a_missing_file_is_a_result_with_its_error(ten_classes, tmp_path):
    model = cutlass_resnet.from_pretrained(ten_classes[1])
    (result,) = classify([tmp_path / "gone.jpg"], model, topk=1)
    assert result.top == [] and "FileNotFoundError" in result.error and "gone.jpg" in result.error


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_writer_lines_read_back_and_a_torn_last_line_is_cut(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    results = [
        Result(
            "a, b.jpg",
            [{"index": 3, "label": 'say "hi"', "probability": 0.75}, {"index": 1, "label": "x", "probability": 0.25}],
        ),
        Result("c.jpg", error="OSError: truncated"),
    ]
    with Writer(path, topk=2) as writer:
        for result in results:
            writer.write(result)
    back = read_results(path)
    assert [(r.path, r.top, r.error) for r in back] == [(r.path, r.top, r.error) for r in results]
    if suffix == ".csv":
        rows = list(csv.DictReader(path.read_text().splitlines()))
        assert rows[0]["label_1"] == 'say "hi"' and rows[1]["error"] == "OSError: truncated"
    else:
        assert json.loads(path.read_text().splitlines()[1]) == {
            "version": 2,
            "path": "c.jpg",
            "error": "OSError: truncated",
        }
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"path": "d.jp')  # a run killed mid-line
    assert done_paths(path) == ["a, b.jpg", "c.jpg"] and path.read_bytes() == whole
    with Writer(path, topk=2, append=True) as writer:
        writer.write(Result("d.jpg", error="gone"))
    assert [r.path for r in read_results(path)] == ["a, b.jpg", "c.jpg", "d.jpg"]


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_features_files_keep_the_row_order(tmp_path, suffix):
    rows = {f"img{i}.jpg": torch.randn(7) for i in (3, 1, 2)}
    save_features(tmp_path / f"f{suffix}", rows)
    back = load_features(tmp_path / f"f{suffix}")
    assert list(back) == list(rows)
    for path, row in rows.items():
        assert torch.equal(back[path], row)


def test_a_16_bit_png_reads_as_its_8_bit_version(tmp_path):
    """16-bit images are scaled by their value range (65535 is white), not clipped to 255."""
    import numpy as np
    from PIL import Image

    from cutlass_resnet.cli.predict import sample_image

    with Image.open(sample_image()) as photo:
        gray = np.asarray(photo.convert("L"))
    Image.fromarray(gray).save(tmp_path / "8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16.png")  # the same image, 16 bits a pixel
    with Image.open(tmp_path / "16.png") as image:
        assert image.mode.startswith("I")
    assert np.array_equal(np.asarray(read_image(tmp_path / "16.png")), np.asarray(read_image(tmp_path / "8.png")))


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with Orientation=6 (display rotated 90 degrees clockwise) reads upright."""
    import numpy as np
    from PIL import Image

    from cutlass_resnet.cli.predict import sample_image

    with Image.open(sample_image()) as photo:
        upright = photo.convert("RGB")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(tmp_path / "phone.png", exif=exif)
    read = read_image(tmp_path / "phone.png")
    assert read.size == upright.size and np.array_equal(np.asarray(read), np.asarray(upright))


def test_only_regular_files_are_read(tmp_path):
    """A FIFO named like an image is refused at once instead of blocking the run."""
    import os

    os.mkfifo(tmp_path / "x.jpg")
    with pytest.raises(OSError, match="is a FIFO: only regular files are read"):
        read_image(tmp_path / "x.jpg")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_file_name_that_is_not_utf8_is_written_and_read_back(tmp_path, suffix):
    name = os.fsdecode(b"caf\xe9.jpg")  # as os.listdir gives a Latin-1 name on a UTF-8 system
    with Writer(tmp_path / f"out{suffix}", topk=1) as writer:
        writer.write(Result(name, [{"label": "cat", "index": 3, "probability": 0.5}]))
        writer.write(Result("next.jpg", error="unreadable"))
    assert [r.path for r in read_results(tmp_path / f"out{suffix}")] == [name, "next.jpg"]
