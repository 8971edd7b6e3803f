"""Client value rules (ARCHITECTURE.md): Python/numpy/torch/TF values -> wire values, with the limits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from schemas.errors import LimitExceeded, ValidationError
from schemas.events import LIST, SUBTREE, TENSOR
from schemas.limits import Limits
from schemas.paths import PathKey, display_path
from schemas.run_fields import check_config_json, check_tags, config_json
from schemas.tensors import from_npy, tensor_stats
from schemas.text import check_label
from schemas.values import Converter, to_python


def wire(value: Any, limits: Limits | None = None) -> Any:
    return Converter(limits or Limits()).value(value, "k")


def leaves(data: Any, limits: Limits | None = None) -> tuple[list[tuple[PathKey, float]], list[tuple[PathKey, Any]]]:
    floats: list[tuple[PathKey, float]] = []
    extras: list[tuple[PathKey, Any]] = []
    Converter(limits or Limits()).log_leaves(data, floats, extras)
    return floats, extras


def test_plain_python_scalars_pass_unchanged() -> None:
    for value in (None, True, False, 0, -(2**63), 2**63 - 1, 0.5, "text", ""):
        assert wire(value) == value and type(wire(value)) is type(value)


def test_nan_and_infinities_are_valid_floats() -> None:
    assert math.isnan(wire(math.nan))
    assert wire(math.inf) == math.inf and wire(-math.inf) == -math.inf


def test_numpy_scalars_become_python_values() -> None:
    assert type(wire(np.float32(0.5))) is float and wire(np.float32(0.5)) == 0.5
    assert type(wire(np.int8(-3))) is int and wire(np.int8(-3)) == -3
    assert type(wire(np.uint32(7))) is int
    assert wire(np.bool_(True)) is True
    assert type(wire(np.str_("x"))) is str


def test_ints_outside_int64_are_refused_naming_the_key() -> None:
    with pytest.raises(ValidationError, match=r"'k'.*64 bits"):
        wire(2**63)
    with pytest.raises(ValidationError, match="64 bits"):
        wire(np.uint64(2**64 - 1))


def test_lists_and_tuples_become_list_values_recursively() -> None:
    assert wire([1, (2.5, None), "x"]) == (LIST, {"items": [1, (LIST, {"items": [2.5, None]}), "x"]})


def test_a_dict_value_is_one_subtree() -> None:
    assert wire({"a": 1, "b": {"c": [True]}}) == (
        SUBTREE,
        {"values": {"a": 1, "b": (SUBTREE, {"values": {"c": (LIST, {"items": [True]})}})}},
    )


def test_array_of_one_element_is_a_scalar() -> None:
    assert wire(np.array([[3.5]])) == 3.5
    assert wire(np.array(7)) == 7


def test_array_of_at_most_32_elements_is_a_nested_list() -> None:
    value = wire(np.arange(6).reshape(2, 3))
    assert to_python(value) == [[0, 1, 2], [3, 4, 5]]


def test_larger_array_is_a_tensor_whose_npy_bytes_round_trip_exactly() -> None:
    array = np.random.default_rng(1).standard_normal((7, 9)).astype(np.float32)
    array[0, 0] = np.nan
    name, datum = wire(array)
    assert name == TENSOR and datum["kind"] == "numpy.ndarray"
    back = from_npy(datum["npy"])
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


def test_tensor_reads_back_as_its_stats_dict() -> None:
    array = np.linspace(0, 1, 100)
    assert to_python(wire(array)) == tensor_stats(array)
    assert np.array_equal(to_python(wire(array), tensors="array"), array)


def test_object_and_string_arrays_larger_than_32_are_refused() -> None:
    with pytest.raises(ValidationError, match="dtype"):
        wire(np.array(["a"] * 40))
    with pytest.raises(ValidationError):
        wire(np.array([object()] * 40, dtype=object))


def test_unsupported_type_names_the_key_and_the_type() -> None:
    with pytest.raises(ValidationError, match=r"'k'.*builtins\.complex"):
        wire(1j)
    with pytest.raises(ValidationError, match="set"):
        wire({1, 2})


def test_log_splits_nested_dicts_into_leaf_paths_and_floats_from_the_rest() -> None:
    floats, extras = leaves({"loss": 0.5, "grad": {"norm": 1.0, "n": 3}, "a.b/c": None})
    assert floats == [("loss", 0.5), (("grad", "norm"), 1.0)]
    assert extras == [(("grad", "n"), 3), ("a.b/c", None)]


@pytest.mark.parametrize("key", [1, "", None, ("a",)])
def test_keys_must_be_non_empty_strings(key: Any) -> None:
    with pytest.raises(ValidationError, match="non-empty strings"):
        leaves({key: 1.0})
    with pytest.raises(ValidationError, match="non-empty strings"):
        leaves({"ok": {key: 1.0}})


def test_key_length_limit() -> None:
    limits = Limits(max_key_length=5)
    leaves({"abcde": 1.0}, limits)
    with pytest.raises(LimitExceeded, match="max_key_length is 5") as caught:
        leaves({"abcdef": 1.0}, limits)
    assert caught.value.limit == "max_key_length" and caught.value.maximum == 5


def test_nesting_depth_limit() -> None:
    limits = Limits(max_key_depth=2)
    leaves({"a": {"b": 1.0}}, limits)
    with pytest.raises(LimitExceeded, match="max_key_depth"):
        leaves({"a": {"b": {"c": 1.0}}}, limits)


def test_values_per_event_limit_counts_leaves_and_list_items() -> None:
    limits = Limits(max_values_per_event=3)
    leaves({"a": 1.0, "b": {"c": 2.0, "d": 3.0}}, limits)
    with pytest.raises(LimitExceeded, match="max_values_per_event=3"):
        leaves({"a": 1.0, "b": {"c": 2.0, "d": 3.0, "e": 4.0}}, limits)
    with pytest.raises(LimitExceeded, match="max_values_per_event"):
        leaves({"a": [1, 2, 3, 4]}, limits)


def test_string_length_limit() -> None:
    limits = Limits(max_string_length=4)
    assert wire("abcd", limits) == "abcd"
    with pytest.raises(LimitExceeded, match="max_string_length is 4"):
        wire("abcde", limits)


def test_tensor_bytes_limit() -> None:
    limits = Limits(max_tensor_bytes=1000)
    wire(np.zeros(100, dtype=np.float32), limits)
    with pytest.raises(LimitExceeded, match="max_tensor_bytes is 1000") as caught:
        wire(np.zeros(200, dtype=np.float64), limits)
    assert caught.value.key == "k"


def test_display_path_escapes_literal_dots() -> None:
    assert display_path(("grad", "norm")) == "grad.norm"
    assert display_path("a.b") == "a\\.b"


def test_torch_tensors_are_converted_like_arrays() -> None:
    torch = pytest.importorskip("torch")
    small = torch.tensor([1.0, 2.0], requires_grad=True)
    assert to_python(wire(small)) == [1.0, 2.0]
    name, datum = wire(torch.arange(64, dtype=torch.float32))
    assert name == TENSOR and datum["kind"] == "torch.Tensor"
    assert np.array_equal(from_npy(datum["npy"]), np.arange(64, dtype=np.float32))


def test_tensorflow_tensors_are_converted_like_arrays() -> None:
    tf = pytest.importorskip("tensorflow")
    name, datum = wire(tf.range(64))
    assert name == TENSOR and datum["kind"] == "tensorflow.Tensor"


class _FakeTorchTensor:
    """Duck typing only: something whose class lives in a module named torch.* (torch not needed)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def detach(self) -> _FakeTorchTensor:
        return self

    def cpu(self) -> _FakeTorchTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self._array


_FakeTorchTensor.__module__ = "torch.fake"


def test_tensors_are_recognised_by_their_module_without_importing_torch() -> None:
    name, datum = wire(_FakeTorchTensor(np.arange(40.0)))
    assert name == TENSOR and datum["kind"] == "torch.Tensor"


@pytest.mark.parametrize("key", ["k\x1b[31m", "nul\x00", "line\nbreak", "cr\r", "c1\x85", "\u202eevil", "a\u2066b", "m\u200f"])
def test_keys_with_control_or_text_direction_characters_are_refused_naming_the_character(key: str) -> None:
    with pytest.raises(ValidationError, match=r"U\+[0-9A-F]{4}"):
        leaves({key: 1.0})
    with pytest.raises(ValidationError, match="printable"):
        check_label(key, "a key")


@pytest.mark.parametrize("key", ["loss", "val/acc", "grad.norm", "日本", "emoji \U0001f600", "zwj \u200d", "a b"])
def test_printable_keys_in_any_script_are_accepted(key: str) -> None:
    assert check_label(key, "a key") == key
    assert leaves({key: 1.0})[0] == [(key, 1.0)]


def test_tags_are_labels_within_the_key_length_and_at_most_max_values_per_event_of_them() -> None:
    small = Limits(max_key_length=4, max_values_per_event=2)
    assert check_tags(["ab", "cdef"], small) == ["ab", "cdef"]
    assert check_tags(None, small) == []
    for bad in (["abcde"], [""], [1], "ab", ["\x1bx"], ["\udc00"]):
        with pytest.raises(ValidationError):
            check_tags(bad, small)
    with pytest.raises(LimitExceeded, match="max_values_per_event"):
        check_tags(["a", "b", "c"], small)
    assert check_tags(["\x1bx"], small, printable=False) == ["\x1bx"]  # the consumer folds what older SDKs sent
    with pytest.raises(ValidationError, match="not valid Unicode"):
        check_tags(["\udc00"], small, printable=False)  # but never what cannot be stored


def test_a_config_with_text_that_utf8_cannot_carry_is_refused_naming_the_key() -> None:
    from pathlib import PurePosixPath

    with pytest.raises(ValidationError, match=r"config value 'data\.dir'.*not valid Unicode"):
        config_json({"data": {"dir": PurePosixPath("/tmp/\udcff")}})  # a path from a file name that is not UTF-8
    with pytest.raises(ValidationError, match="config key"):
        config_json({"ok": {"\ud800": 1}})
    with pytest.raises(ValidationError, match="not valid Unicode"):
        check_config_json('{"x": ["a", "\\udc00"]}')  # as the JSON escape the consumer reads from an old SDK
    assert config_json({"lr": np.float32(0.5), "dims": (1, 2)}) == ({"lr": np.float32(0.5), "dims": (1, 2)},
                                                                    '{"lr": 0.5, "dims": [1, 2]}')


def test_numpy_datetime_and_timedelta_values_are_refused_with_a_validation_error() -> None:
    for value in (np.timedelta64(5, "s"), np.datetime64("2020-01-01")):
        with pytest.raises(ValidationError, match="log it as a number"):
            wire(value)
