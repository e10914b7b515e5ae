"""Hypothesis settings and strategies shared by the fuzz tests (docs/fuzzing.md).

CI runs every fuzz test with a small, fixed number of examples, derandomized: the same inputs
on every run, a few seconds a test. `MODELPORT_FUZZ_EXAMPLES=N` runs a campaign instead: N
examples per test (per operation for the API fuzz test), fresh random inputs every run, and
Hypothesis's example database on (`.hypothesis/`), so a failure found once is replayed first
next time.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ENV = "MODELPORT_FUZZ_EXAMPLES"


def campaign_examples() -> int | None:
    """The campaign's examples per test, or None in an ordinary (CI) run."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    examples = int(value)
    if examples < 1:
        raise ValueError(f"{ENV} must be a positive number of examples, not {value!r}")
    return examples


def fuzz_settings(ci_examples: int) -> settings:
    """`ci_examples` derandomized examples, or the campaign's number of random ones."""
    campaign = campaign_examples()
    return settings(
        max_examples=campaign or ci_examples,
        derandomize=campaign is None,
        database=settings.default.database if campaign else None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
        print_blob=True,
    )


# JSON values: what a client (or an upstream) can send, including the awkward ones: deep
# nesting, huge and negative numbers, floats at the edges, unusual strings.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "\ud7ff", "💥", "<think>", "</tool_call>", "[DONE]"])
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


@st.composite
def mutated(draw: st.DrawFn, value: Any, names: tuple[str, ...] = ()) -> Any:
    """`value` (a JSON value) with one place changed: inside an object, a field (one it has,
    one of `names`, the fields a schema knows, or any) set to an arbitrary JSON value, dropped,
    or changed further down; inside an array, one item changed; anything else replaced by an
    arbitrary JSON value. Near-valid input reaches deeper than random input."""
    if isinstance(value, dict) and (value or names):
        known = sorted(set(value) | set(names))
        key = draw(st.sampled_from(known) | st.text(max_size=12), label="field")
        action = draw(st.sampled_from(["set", "set", "descend", "drop"]), label="action")
        changed = dict(value)
        if action == "descend" and key in value:
            changed[key] = draw(mutated(value[key]))
        elif action == "drop":
            changed.pop(key, None)
        else:
            changed[key] = draw(json_values())
        return changed
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        changed_list = list(value)
        changed_list[index] = draw(mutated(value[index]))
        return changed_list
    return draw(json_values())
