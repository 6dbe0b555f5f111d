"""ray_data.Predictor, the callable class for Ray Data's map_batches, called as Ray calls it (no cluster needed):
a batch of paths or of bytes in, the classes classify() gives out, an unreadable image a row with its error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cutlass_resnet
from cutlass_resnet.predict import classify, expand_paths
from cutlass_resnet.ray_data import Predictor


def test_a_batch_of_paths_or_bytes_gives_what_classify_gives(ten_classes, image_folder):
    paths = expand_paths([image_folder])[:12]  # broken.jpg among them
    expected = list(classify(paths, cutlass_resnet.from_pretrained(ten_classes[1], fuse_bn=True), topk=3))
    predictor = Predictor("resnet18", str(ten_classes[1]), topk=3, features=True)
    by_path = predictor({"path": np.array(paths)})
    by_bytes = predictor({"bytes": np.array([Path(p).read_bytes() for p in paths], dtype=object)})
    assert by_path["path"] == paths and "path" not in by_bytes
    for out in (by_path, by_bytes):
        for row, result in enumerate(expected):
            assert (out["error"][row] is None) == (result.error is None), result.path
            assert out["index"][row] == [t["index"] for t in result.top]
            assert out["label"][row] == [t["label"] for t in result.top]
            assert np.allclose(out["probability"][row], [t["probability"] for t in result.top], atol=1e-6)
            assert out["features"][row].shape == ((512,) if result.error is None else (0,))
    assert sum(e is not None for e in by_path["error"]) == 1
    with pytest.raises(ValueError, match="a 'path' or a 'bytes' column"):
        predictor({"image": np.zeros(1)})
