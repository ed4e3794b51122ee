"""The schema's SQL functions: one file each under services/storage/functions/, holding its
contract (comments first) and its whole body, defined with CREATE OR REPLACE so that it can be
applied again whenever the file changes; no versioned migration defines a function."""

from __future__ import annotations

import re

from services.storage.migrate import function_files, migration_files

DEFINITION = re.compile(r"CREATE\s+(OR\s+REPLACE\s+)?FUNCTION\s+(\w+)\s*\(", re.IGNORECASE)


def test_each_function_file_defines_the_function_it_is_named_after() -> None:
    files = function_files()
    assert {name for name, _ in files} == {
        "book_transfer_set.sql",
        "cut_business_date.sql",
        "shard_business_date.sql",
        "slot_change.sql",
        "slot_fence.sql",
    }
    for name, sql in files:
        definitions = DEFINITION.findall(sql)
        assert definitions == [("OR REPLACE ", name.removesuffix(".sql"))], name
        assert sql.startswith("-- "), f"{name} starts with its contract"


def test_no_versioned_migration_defines_a_function() -> None:
    for name, sql in migration_files():
        assert DEFINITION.search(sql) is None, name
