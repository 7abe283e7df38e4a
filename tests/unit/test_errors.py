from __future__ import annotations

import pytest

from sandlot import errors


def test_every_code_maps_to_exactly_one_class() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.SandlotError)]
    codes = [c.code for c in classes if c is not errors.SandlotError]
    assert len(codes) == len(set(codes))
    assert set(errors.ERROR_CODES) == set(codes)


@pytest.mark.parametrize(
    ("code", "builtin"),
    [
        ("not_found", FileNotFoundError),
        ("is_a_directory", IsADirectoryError),
        ("not_a_directory", NotADirectoryError),
        ("exists", FileExistsError),
        ("permission_denied", PermissionError),
        ("invalid_argument", ValueError),
        ("timeout", TimeoutError),
    ],
)
def test_agent_codes_are_also_builtin_errors(code: str, builtin: type[BaseException]) -> None:
    exc = errors.error_from_code(code, "msg /x", path="/x", agent=True)
    assert isinstance(exc, builtin) and isinstance(exc, errors.SandlotError)
    assert str(exc) == "msg /x" and exc.path == "/x"


def test_unknown_code_is_internal() -> None:
    assert type(errors.error_from_code("weird", "m")) is errors.InternalError
