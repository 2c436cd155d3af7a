"""Checks the files `KILN_ONNX_DUMP=DIR cargo test -p kiln-conformance --test onnx_export`
writes: each DIR/NAME.onnx passes `onnx.checker` and, run by onnxruntime on DIR/NAME.json's
inputs, gives kiln's outputs within 1e-5 relative (|onnx - kiln| <= 1e-5 * max(|kiln|, 1)).

Not part of CI (it needs `pip install onnx onnxruntime numpy`):

    python conformance/tests/onnx_check.py DIR
"""

import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime


def main(directory: str) -> int:
    failures = 0
    for path in sorted(pathlib.Path(directory).glob("*.onnx")):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        case = json.loads(path.with_suffix(".json").read_text())
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {}
        for spec, value in zip(session.get_inputs(), case["inputs"]):
            dtype = np.int64 if value["int"] else np.float32
            feeds[spec.name] = np.array(value["data"], dtype=dtype).reshape(value["shape"])
        outputs = session.run(None, feeds)
        for k, (got, want) in enumerate(zip(outputs, case["outputs"])):
            want = np.array(want["data"]).reshape(want["shape"])
            finite = np.isfinite(want)
            err = np.abs(got[finite] - want[finite]) / np.maximum(np.abs(want[finite]), 1.0)
            worst = float(err.max()) if err.size else 0.0
            ok = got.shape == want.shape and worst <= 1e-5
            failures += not ok
            print(f"{path.stem}: output {k}: {'ok' if ok else 'FAILED'}, largest relative error {worst:.2e}")
    print(f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
