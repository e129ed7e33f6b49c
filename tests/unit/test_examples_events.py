"""Every example event document: valid ones pass, invalid ones raise the fault their name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.domain.faults import FAULTS
from broker.xml.schemas import Schemas

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "events"
VALID = sorted((EXAMPLES / "valid").glob("*.xml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.xml"))


@pytest.fixture(scope="module")
def schemas() -> Schemas:
    return Schemas.load()


def test_there_is_a_valid_example_of_every_event_type():
    from broker.domain.model import EVENT_TYPES
    stems = {path.stem.split("-")[0] for path in VALID}
    assert stems >= set(EVENT_TYPES) | {"EventBatch"}


@pytest.mark.parametrize("path", VALID, ids=lambda path: path.name)
def test_valid_examples_pass(schemas, path):
    assert schemas.check_events(path.read_bytes())


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.name)
def test_invalid_examples_raise_the_fault_in_their_name(schemas, path):
    code = path.name.split("--")[0]
    with pytest.raises(FAULTS[code]) as caught:
        schemas.check_events(path.read_bytes())
    assert caught.value.code == code
    assert caught.value.description.startswith("line ")
