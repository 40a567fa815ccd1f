import json
import math

import pytest

from bitfab.playback.compare import (
    FRAGMENT_LIMIT,
    Change,
    Truncated,
    Typed,
    diff,
    parse_ignore,
    typed_view,
    verdict,
)


def meta(values):
    return {"v": 1, "values": values}


TUPLE = ["custom", "py:tuple"]
DATETIME = ["custom", "py:datetime"]


def dataclass_ann(cls):
    return ["custom", "py:dataclass", {"class": cls}]


# ---- typed_view ---------------------------------------------------------------------------


def test_typed_view_returns_unannotated_values_as_they_are():
    """Without a sidecar the view is the readable value itself, not a copy."""
    value = {"a": [1, 2], "b": "x"}
    assert typed_view(value, None) is value
    assert typed_view(value, {"v": 1}) is value


def test_typed_view_tells_a_tuple_from_a_list():
    """A list annotated py:tuple becomes a marker, so it no longer equals the plain list."""
    as_tuple = typed_view([1, 2], meta([TUPLE]))
    as_list = typed_view([1, 2], None)
    assert as_tuple == Typed("py:tuple", None, [1, 2])
    assert as_list == [1, 2]
    assert as_tuple != as_list


def test_typed_view_tells_a_dataclass_from_a_dict_and_classes_apart():
    """A dataclass carries its class name: it differs from a dict and from another class."""
    value = {"user": {"name": "ada", "age": 36}}
    view = typed_view(value, meta({"user": [dataclass_ann("app.models:User")]}))
    assert view == {"user": Typed("py:dataclass", "app.models:User", {"name": "ada", "age": 36})}
    assert view != value
    assert view != typed_view(value, meta({"user": [dataclass_ann("app.models:Admin")]}))


def test_typed_view_tells_a_datetime_from_a_string():
    """An ISO string annotated py:datetime differs from the same string left plain."""
    text = "2026-11-27T10:38:45.642593+00:00"
    assert typed_view(text, meta([DATETIME])) == Typed("py:datetime", None, text)
    assert typed_view(text, meta([DATETIME])) != typed_view(text, None)


def test_typed_view_resolves_nested_and_escaped_paths():
    """Children paths are relative to their annotated parent; ``\\.`` is a dot inside a key."""
    value = {"a.b": [[1, "2026-01-01T00:00:00"], {"k": [3]}], "c": 4}
    sidecar = meta(
        {
            "a\\.b": [TUPLE, {"0": [TUPLE, {"1": [DATETIME]}]}],
            "a\\.b.1.k": [["custom", "py:set"]],
        }
    )
    assert typed_view(value, sidecar) == {
        "a.b": Typed(
            "py:tuple",
            None,
            [
                Typed("py:tuple", None, [1, Typed("py:datetime", None, "2026-01-01T00:00:00")]),
                {"k": Typed("py:set", None, [3])},
            ],
        ),
        "c": 4,
    }


def test_typed_view_keeps_params_other_than_class():
    """Bytes read as hex and as UTF-8 text are different values even when the text matches."""
    hex_view = typed_view("6869", meta([["custom", "py:bytes", {"encoding": "hex"}]]))
    utf8_view = typed_view("6869", meta([["custom", "py:bytes", {"encoding": "utf-8"}]]))
    assert hex_view == Typed("py:bytes", None, "6869", '{"encoding":"hex"}')
    assert hex_view != utf8_view


def test_typed_view_reads_superjson_annotations():
    """superjson's own string and ["class", name] annotations become markers too."""
    value = ["2026-01-01T00:00:00.000Z", {"x": 1}]
    view = typed_view(value, meta({"0": ["Date"], "1": [["class", "Point"]]}))
    assert view == [
        Typed("Date", None, "2026-01-01T00:00:00.000Z"),
        Typed("class", "Point", {"x": 1}),
    ]


def test_typed_view_user_data_that_looks_like_a_marker_stays_data():
    """A user dict shaped like an annotation is not mistaken for one."""
    value = {"tag": "py:tuple", "value": [1]}
    assert typed_view(value, None) == {"tag": "py:tuple", "value": [1]}
    assert typed_view(value, None) != Typed("py:tuple", None, [1])


@pytest.mark.parametrize(
    ("value", "sidecar", "note"),
    [
        ([1], ["v", 1], "meta is list, not an object"),
        ([1], {"v": 2, "values": [TUPLE]}, "unsupported sidecar version 2"),
        ([1], {"v": True, "values": [TUPLE]}, "unsupported sidecar version True"),
        ([1], meta(5), "a node is neither [annotation, {children}] nor a map: 5"),
        ([1], meta([]), "a node is neither [annotation, {children}] nor a map: []"),
        ([1], meta([["custom"]]), "malformed annotation ['custom']"),
        ([1], meta([["custom", 7]]), "malformed annotation ['custom', 7]"),
        ([1], meta([["custom", "py:enum", []]]), "malformed annotation ['custom', 'py:enum', []]"),
        (
            [1],
            meta([["custom", "py:enum", {"class": 3}]]),
            "malformed class in annotation ['custom', 'py:enum', {'class': 3}]",
        ),
        ([1], meta([TUPLE, [1]]), "the children of a node are not a map: [1]"),
        ({"a": 1}, meta({"b": [TUPLE]}), "path 'b' is not in the value"),
        ([1], meta({"1": [TUPLE]}), "path '1' is not in the value"),
        ([1], meta({"-0": [TUPLE]}), "path '-0' is not in the value"),
        ({"a": 1}, meta({"a.b": [TUPLE]}), "path 'a.b' goes inside a scalar"),
        ({"a": 1}, meta({"a\\": [TUPLE]}), "sidecar path 'a\\\\' ends with a lone backslash"),
        ({"a": [1]}, meta({"a.": [TUPLE]}), "path 'a.' is not in the value"),
        ("x", meta({"0": [TUPLE]}), "path '0' goes inside a scalar"),
        ({"a": 1}, meta({1: [TUPLE]}), "path 1 is not a string"),
        (
            {"a": ["2026-01-01"]},
            meta({"a": [TUPLE, {"0": [DATETIME]}], "a.0": [["custom", "py:date"]]}),
            "one position has two different annotations",
        ),
    ],
)
def test_typed_view_ignores_a_malformed_sidecar_and_notes_why(value, sidecar, note):
    """An unreadable sidecar counts as no sidecar; the reason goes to the problems list."""
    problems: list[str] = []
    assert typed_view(value, sidecar, problems=problems) is value
    assert problems == [f"sidecar ignored: {note}"]


def test_typed_view_accepts_one_position_annotated_twice_alike():
    """Two routes to one position with the same annotation are not a conflict."""
    sidecar = meta({"a": [TUPLE, {"0": [DATETIME]}], "a.0": [DATETIME]})
    problems: list[str] = []
    assert typed_view({"a": ["2026-01-01T00:00:00"]}, sidecar, problems=problems) == {
        "a": Typed("py:tuple", None, [Typed("py:datetime", None, "2026-01-01T00:00:00")])
    }
    assert problems == []


def test_typed_view_never_raises_without_a_problems_list():
    """A hopeless sidecar with no list to note it in still gives the plain value back."""
    deep_meta: list = [TUPLE]
    value: list = []
    for _ in range(5000):
        deep_meta = [TUPLE, {"0": deep_meta}]
        value = [value]
    problems: list[str] = []
    assert typed_view(value, meta(deep_meta), problems=problems) is value
    assert problems == ["sidecar ignored: the sidecar is nested too deeply"]
    assert typed_view(value, meta(deep_meta)) is value
    assert typed_view(value, object()) is value


# ---- diff ---------------------------------------------------------------------------------


def test_diff_of_equal_values_is_empty():
    """Equal values with equal sidecars have no changes."""
    value = {"a": [1, {"b": None}], "c": "x"}
    assert (
        diff((value, meta({"a": [TUPLE]})), (json.loads(json.dumps(value)), meta({"a": [TUPLE]})))
        == []
    )


def test_diff_reports_every_kind_of_change_in_nested_structures():
    """Changed, added, removed and type-changed positions come sorted by path."""
    original = {
        "label": "spam",
        "scores": [0.9, 0.1, 0.5],
        "user": {"name": "ada", "tags": ["a"], "email": "a@x"},
        "meta": {"n": 1},
        "when": "2026-01-01T00:00:00",
    }
    new = {
        "label": "ham",
        "scores": [0.9, 0.2],
        "user": {"name": "ada", "tags": ["a", "b"], "phone": "123"},
        "meta": [1],
        "when": "2026-01-01T00:00:00",
        "extra": True,
    }
    assert diff((original, meta({"when": [DATETIME]})), (new, None)) == [
        Change("$.extra", "added", None, True),
        Change("$.label", "changed", "spam", "ham"),
        Change("$.meta", "type_changed", {"n": 1}, [1]),
        Change("$.scores[1]", "changed", 0.1, 0.2),
        Change("$.scores[2]", "removed", 0.5, None),
        Change("$.user.email", "removed", "a@x", None),
        Change("$.user.phone", "added", None, "123"),
        Change("$.user.tags[1]", "added", None, "b"),
        Change("$.when", "type_changed", "2026-01-01T00:00:00", "2026-01-01T00:00:00"),
    ]


def test_diff_sees_a_tuple_turned_list_and_a_dataclass_turned_dict():
    """Annotation tags and classes are part of the value: a mismatch is a type change."""
    original = (
        {"pair": [1, 2], "user": {"id": 1}, "point": {"x": 0}},
        meta(
            {
                "pair": [TUPLE],
                "user": [dataclass_ann("m:User")],
                "point": [dataclass_ann("m:Point")],
            }
        ),
    )
    new = (
        {"pair": [1, 2], "user": {"id": 1}, "point": {"x": 0}},
        meta(
            {
                "point": [dataclass_ann("m:Point3")],
                "user": [["custom", "py:model", {"class": "m:User"}]],
            }
        ),
    )
    assert diff(original, new) == [
        Change("$.pair", "type_changed", [1, 2], [1, 2]),
        Change("$.point", "type_changed", {"x": 0}, {"x": 0}),
        Change("$.user", "type_changed", {"id": 1}, {"id": 1}),
    ]


def test_diff_reports_differing_params_as_a_change():
    """Same tag, other params (bytes encoding): the values differ though the text is equal."""
    original = ("6869", meta([["custom", "py:bytes", {"encoding": "hex"}]]))
    new = ("6869", meta([["custom", "py:bytes", {"encoding": "utf-8"}]]))
    assert diff(original, new) == [Change("$", "changed", "6869", "6869")]


def test_diff_descends_into_annotated_values():
    """Under equal annotations the diff goes on inside, with child annotations compared too."""
    original = (
        [[1, "2026-01-01"], 2],
        meta([TUPLE, {"0": [TUPLE, {"1": [["custom", "py:date"]]}]}]),
    )
    new = ([[1, "2026-01-02"], 3], meta([TUPLE, {"0": [TUPLE, {"1": [["custom", "py:date"]]}]}]))
    assert diff(original, new) == [
        Change("$[0][1]", "changed", "2026-01-01", "2026-01-02"),
        Change("$[1]", "changed", 2, 3),
    ]


def test_diff_treats_int_and_float_as_one_number_type_but_not_bool():
    """1 equals 1.0 (JSON has one number type); true against 1 is a type change."""
    original = {"i": 1, "f": 2.5, "big": 2**53 + 1, "nan": math.nan, "b": True, "z": 0}
    new = {"i": 1.0, "f": 2.5, "big": float(2**53), "nan": math.nan, "b": 1, "z": False}
    assert diff((original, None), (new, None)) == [
        Change("$.b", "type_changed", True, 1),
        Change("$.big", "changed", 2**53 + 1, float(2**53)),
        Change("$.z", "type_changed", 0, False),
    ]


def test_diff_orders_indices_numerically_and_quotes_odd_keys():
    """$[2] comes before $[10]; keys that aren't identifiers are written in brackets."""
    original = ([0] * 11, None)
    new = ([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], None)
    assert [c.path for c in diff(original, new)] == ["$[2]", "$[10]"]
    odd = {"x y": 1, "a.b": 1, "0": 1, "é": 1, "": 1}
    changed = {key: 2 for key in odd}
    assert [c.path for c in diff((odd, None), (changed, None))] == [
        '$[""]',
        '$["0"]',
        '$["a.b"]',
        '$["x y"]',
        "$.é",
    ]


def test_diff_of_different_scalars_at_the_root():
    """Two different top-level scalars give one change at $."""
    assert diff(("a", None), ("b", None)) == [Change("$", "changed", "a", "b")]
    assert diff((None, None), ("b", None)) == [Change("$", "type_changed", None, "b")]


def test_diff_truncates_large_fragments():
    """A fragment over FRAGMENT_LIMIT characters of JSON is replaced by a marked preview."""
    big = {"text": "x" * FRAGMENT_LIMIT}
    just_fits = "y" * (FRAGMENT_LIMIT - 2)  # plus two quotes
    changes = diff(({"a": big, "b": just_fits}, None), ({"a": 1, "b": "z"}, None))
    preview = '{"text": "' + "x" * 110 + "..."
    assert changes == [
        Change("$.a", "type_changed", Truncated(preview), 1),
        Change("$.b", "changed", just_fits, "z"),
    ]
    assert changes[0].to_dict() == {
        "path": "$.a",
        "kind": "type_changed",
        "old": preview,
        "new": 1,
        "truncated": ["old"],
    }
    assert changes[1].to_dict() == {"path": "$.b", "kind": "changed", "old": just_fits, "new": "z"}


def test_diff_caps_the_number_of_changes():
    """Past max_changes, one last change of kind 'more' counts the rest."""
    changes = diff((list(range(250)), None), (list(range(1, 251)), None))
    assert changes[:2] == [Change("$[0]", "changed", 0, 1), Change("$[1]", "changed", 1, 2)]
    assert changes[199:] == [Change("$[199]", "changed", 199, 200), Change("$", "more", None, 50)]
    assert diff(([1, 2, 3], None), ([], None), max_changes=1) == [
        Change("$[0]", "removed", 1, None),
        Change("$", "more", None, 2),
    ]


def test_diff_notes_malformed_sidecars_and_compares_without_them():
    """An unreadable sidecar on one side is noted and that side is read as plain JSON."""
    problems: list[str] = []
    changes = diff(([1], meta({"5": [TUPLE]})), ([1], meta([TUPLE])), problems=problems)
    assert changes == [Change("$", "type_changed", [1], [1])]
    assert problems == ["sidecar ignored: path '5' is not in the value"]


def test_diff_walks_deep_values_without_recursion():
    """A value nested deeper than Python's recursion limit is compared without overflowing."""
    original: list = [1]
    new: list = [2]
    for _ in range(1500):
        original, new = [original], [new]
    changes = diff((original, None), (new, None))
    assert changes == [Change("$" + "[0]" * 1501, "changed", 1, 2)]


def test_diff_terminates_on_cyclic_values():
    """A cycle (impossible in JSON, possible in a buggy caller) cannot make diff loop forever."""
    cyclic: list = [1]
    cyclic.append(cyclic)
    assert diff((cyclic, None), (cyclic, None)) == []


# ---- ignore paths -------------------------------------------------------------------------

IGNORE_DOC = {
    "created_at": "t1",
    "items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}],
    "key with.dot": 1,
    "a": {"b": [0, 0, {"c": 1, "d": 1}]},
    "deep": {"x": {"id": 5}},
}
IGNORE_NEW = {
    "created_at": "t2",
    "items": [{"id": 10, "v": "A"}, {"id": 20, "v": "b"}],
    "key with.dot": 2,
    "a": {"b": [0, 0, {"c": 2, "d": 1}]},
    "deep": {"x": {"id": 6}},
}
ALL_CHANGES = [
    Change("$.a.b[2].c", "changed", 1, 2),
    Change("$.created_at", "changed", "t1", "t2"),
    Change("$.deep.x.id", "changed", 5, 6),
    Change("$.items[0].id", "changed", 1, 10),
    Change("$.items[0].v", "changed", "a", "A"),
    Change("$.items[1].id", "changed", 2, 20),
    Change('$["key with.dot"]', "changed", 1, 2),
]


@pytest.mark.parametrize(
    ("paths", "hidden"),
    [
        ([], []),
        (["$.created_at"], ["$.created_at"]),
        (["$.items[*].id"], ["$.items[0].id", "$.items[1].id"]),
        (["$.items[0]"], ["$.items[0].id", "$.items[0].v"]),
        (["$.a.b[2].c"], ["$.a.b[2].c"]),
        (['$["key with.dot"]'], ['$["key with.dot"]']),
        (["$['key with.dot']"], ['$["key with.dot"]']),
        (["$..id"], ["$.deep.x.id", "$.items[0].id", "$.items[1].id"]),
        (["$..x"], ["$.deep.x.id"]),
        (["$.*"], [c.path for c in ALL_CHANGES]),
        (["$"], [c.path for c in ALL_CHANGES]),
        (["$..[0]"], ["$.items[0].id", "$.items[0].v"]),
        (['$.items[*]["v"]', "$.deep.*.id"], ["$.deep.x.id", "$.items[0].v"]),
        (["$.nope", "$.items[7]", "$[0]"], []),
    ],
)
def test_diff_ignores_paths_of_every_supported_form(paths, hidden):
    """Each form of ignore path hides exactly the positions it names and what is under them."""
    expected = [c for c in ALL_CHANGES if c.path not in hidden]
    assert diff((IGNORE_DOC, None), (IGNORE_NEW, None), ignore=paths) == expected
    assert diff((IGNORE_DOC, None), (IGNORE_NEW, None), ignore=parse_ignore(paths)) == expected


def test_ignored_paths_hide_added_and_removed_keys():
    """A key that appears or disappears under an ignored path is not reported."""
    original = ({"id": 1, "rows": [{"id": 1}]}, None)
    new = ({"rows": [{"id": 1, "ts": 2}, {"id": 3}]}, None)
    assert diff(original, new, ignore=["$.id", "$.rows[*].ts", "$.rows[1]"]) == []


def test_an_index_path_does_not_match_a_key_that_looks_like_one():
    """$[0] names a list position, $["0"] a dict key: they don't match each other."""
    ignore = parse_ignore(["$[0]"])
    assert ignore.matches([0, "x"])
    assert not ignore.matches(["0"])
    assert parse_ignore(['$["0"]']).matches(["0"])
    assert not parse_ignore(['$["0"]']).matches([0])


def test_parse_ignore_takes_one_string_as_one_path():
    """A bare string is one path, not a sequence of one-character paths."""
    ignore = parse_ignore("$.a")
    assert ignore.expressions == ("$.a",)
    assert ignore.matches(["a"])
    assert not ignore.matches(["b"])
    assert not ignore.matches([])


def test_recursive_descent_matches_at_any_depth_but_not_the_root():
    """$..id matches a key id anywhere below the root, and everything under it."""
    ignore = parse_ignore(["$..id"])
    assert [ignore.matches(p) for p in (["id"], ["a", 0, "id"], ["id", "x"], [], ["ids"])] == [
        True,
        True,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "invalid ignore path '' at position 0: expected '$'"),
        ("created_at", "invalid ignore path 'created_at' at position 0: expected '$'"),
        ("$.", "invalid ignore path '$.' at position 2: expected a key name or '*'"),
        ("$a", "invalid ignore path '$a' at position 1: expected '.', '..' or '['"),
        ("$.a b", "invalid ignore path '$.a b' at position 3: expected '.', '..' or '['"),
        ("$...a", "invalid ignore path '$...a' at position 3: expected a key name or '*'"),
        (
            "$[",
            "invalid ignore path '$[' at position 2: expected '*', an index or a quoted key",
        ),
        ("$[1", "invalid ignore path '$[1' at position 3: expected ']'"),
        (
            "$[-1]",
            "invalid ignore path '$[-1]' at position 2: expected '*', an index or a quoted key",
        ),
        (
            "$[a]",
            "invalid ignore path '$[a]' at position 2: expected '*', an index or a quoted key",
        ),
        ("$[1:2]", "invalid ignore path '$[1:2]' at position 3: expected ']'"),
        (
            '$["x]',
            "invalid ignore path '$[\"x]' at position 2: invalid quoted key"
            " (Unterminated string starting at)",
        ),
        ('$["x"', "invalid ignore path '$[\"x\"' at position 5: expected ']'"),
        ("$['x]", 'invalid ignore path "$[\'x]" at position 2: unterminated quoted key'),
        (
            "$.a[?(@.b)]",
            "invalid ignore path '$.a[?(@.b)]' at position 4:"
            " expected '*', an index or a quoted key",
        ),
    ],
)
def test_parse_ignore_rejects_expressions_outside_the_subset(expr, message):
    """An invalid path raises ValueError naming the position of the problem."""
    with pytest.raises(ValueError) as caught:
        parse_ignore([expr])
    assert str(caught.value) == message


def test_diff_raises_on_an_invalid_ignore_path():
    """diff checks its ignore paths before comparing anything."""
    with pytest.raises(ValueError, match="position 1"):
        diff((1, None), (1, None), ignore=["$x"])


# ---- verdict ------------------------------------------------------------------------------

SOME = [Change("$", "changed", 1, 2)]


@pytest.mark.parametrize(
    ("original_error", "new_error", "changes", "custom", "expected"),
    [
        (None, None, [], None, "same"),
        (None, None, SOME, None, "changed"),
        (None, "E: boom", [], None, "error"),
        (None, "E: boom", SOME, True, "error"),
        ("E: old", None, [], None, "fixed"),
        ("E: old", None, SOME, False, "fixed"),
        ("E: old", "E: boom", [], None, "still_error"),
        ("E: old", "E: boom", SOME, True, "still_error"),
        (None, None, SOME, True, "same"),
        (None, None, [], False, "changed"),
        (None, None, SOME, 1.0, "same"),
        (None, None, [], 0.99, "changed"),
        (None, None, [], math.nan, "changed"),
    ],
)
def test_verdict_table(original_error, new_error, changes, custom, expected):
    """Errors decide first; then a compare hook's answer; then whether the diff is empty."""
    got = verdict(
        original_error=original_error, new_error=new_error, changes=changes, custom=custom
    )
    assert got == expected


def test_verdict_score_is_measured_against_min_score():
    """A float score is 'same' exactly when it reaches min_score."""
    scores = [0.79, 0.8, 0.95]
    got = [
        verdict(original_error=None, new_error=None, changes=[], custom=s, min_score=0.8)
        for s in scores
    ]
    assert got == ["changed", "same", "same"]
