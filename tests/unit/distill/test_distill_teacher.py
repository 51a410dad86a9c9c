"""External teachers: ONNX files (any I/O names, fixed or dynamic batch) and black-box logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.artifacts import copy_onnx_with_contract_names
from distill.errors import TeacherError
from distill.export import onnx_predict
from distill.teacher import LogitsTeacher, OnnxTeacher, probabilities_to_logits


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = torch.nn.Conv1d(1, 4, 3), torch.nn.Linear(4 * 38, 5)

    def forward(self, x):
        return self.head(self.conv(x.unsqueeze(1)).flatten(1))


@pytest.fixture
def fixed_batch_onnx(tmp_path):
    """A model exported the way many are: batch fixed at 1, its own I/O names."""
    net = _Net().eval()
    path = tmp_path / "teacher.onnx"
    torch.onnx.export(net, (torch.zeros(1, 40),), str(path), input_names=["a"], output_names=["b"], dynamo=False)
    return net, path


def test_fixed_batch_onnx_teacher_labels_any_number_of_rows(fixed_batch_onnx):
    net, path = fixed_batch_onnx
    teacher = OnnxTeacher(path, (40,))
    assert teacher.fixed_batch == 1 and teacher.identity.startswith("onnx:")
    x = np.random.default_rng(0).normal(size=(7, 40)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(teacher.predict(x), expected, atol=1e-5)


def test_copied_teacher_follows_the_contract(fixed_batch_onnx, tmp_path):
    _, path = fixed_batch_onnx
    copy = copy_onnx_with_contract_names(path, tmp_path / "copy.onnx")
    x = np.random.default_rng(1).normal(size=(9, 40)).astype(np.float32)
    np.testing.assert_allclose(onnx_predict(copy, x), OnnxTeacher(path, (40,)).predict(x), atol=1e-6)


def test_onnx_teacher_with_wrong_input_shape_is_refused(fixed_batch_onnx):
    with pytest.raises(TeacherError, match=r"does not fit data rows of shape \[64\]"):
        OnnxTeacher(fixed_batch_onnx[1], (64,))


def test_missing_onnx_file_is_named(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        OnnxTeacher(tmp_path / "nope.onnx", (40,))


def test_probabilities_become_log_probabilities():
    probs = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(probabilities_to_logits(probs), np.log(probs), rtol=1e-6)
    with pytest.raises(TeacherError, match="sum to 1"):
        probabilities_to_logits(np.array([[0.5, 0.2]]))


def test_logits_teacher_matches_rows_by_content(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    logits = np.eye(4, dtype=np.float32)
    path = tmp_path / "bought.npz"
    np.savez(path, x=x, logits=logits)
    teacher = LogitsTeacher(path, (3,))
    np.testing.assert_array_equal(teacher.predict(x[[2, 0]]), logits[[2, 0]])
    with pytest.raises(TeacherError, match="no teacher output for 1 of 2 input rows"):
        teacher.predict(np.stack([x[1], x[1] + 100]))
