"""``flask stores export``: CSV keeps every field and every value, and interrupted exports resume
from their state file, whatever the records contain."""

from __future__ import annotations

import csv
import json

import pytest


def run(app, *args, input=None):
    return app.test_cli_runner().invoke(args=["stores", "export", *map(str, args)], input=input)


def products(sandbox) -> list[dict]:
    return sorted(sandbox.state.products.values(), key=lambda p: p["id"])


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def assert_round_trips(rows: list[dict], records: list[dict]) -> None:
    """Strings as they are, everything else as JSON, a missing or null field as an empty cell."""
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        for name, cell in row.items():
            value = record.get(name)
            if value is None:
                assert cell == "", (record["id"], name)
            elif isinstance(value, str):
                assert cell == value, (record["id"], name)
            else:
                assert json.loads(cell) == value, (record["id"], name)
        assert set(record) <= set(row), f"fields of record {record['id']} missing from the CSV"


@pytest.fixture
def uneven(sandbox):
    """Magento leaves out null fields, so a field can first appear deep into the export."""
    catalogue = sandbox.state.products
    del catalogue["SB-00001"]["weight"]
    catalogue["SB-00020"]["name"] = 'Two "lines",\nand a comma'
    catalogue["SB-00045"]["special_price"] = 9.5
    catalogue["SB-00045"]["tier_prices"] = [{"qty": 2, "value": 8}, {"qty": 10, "value": 7.25}]
    catalogue["SB-00059"]["news_from_date"] = "2024-05-01 00:00:00"
    catalogue["SB-00059"]["is_featured"] = False
    return sandbox


def test_csv_has_every_field_any_record_has_and_values_round_trip(app, linked, uneven, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.csv"  # CSV because of the extension, no --format needed
    result = run(app, link_id, "products", "--output", out, "--page-size", "7", "--concurrency", "3")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    header = list(rows[0])
    assert header[:3] == ["id", "sku", "name"]
    assert {"weight", "special_price", "tier_prices", "news_from_date", "is_featured"} <= set(header)
    assert_round_trips(rows, products(uneven))
    assert rows[44]["tier_prices"] == '[{"qty":2,"value":8},{"qty":10,"value":7.25}]' and rows[0]["weight"] == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["products.csv"]  # no state or part file left


def test_csv_to_standard_output_also_has_the_late_fields(app, linked, uneven):
    link_id, _ = linked
    result = run(app, link_id, "products", "--format", "csv", "--page-size", "10")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.output.splitlines(keepends=True)))
    assert_round_trips(rows, products(uneven))


def fail_third_page(sandbox):
    calls = {"n": 0}
    original = sandbox.state.take_failure

    def take_failure(path):
        if path == "/products":
            calls["n"] += 1
            if calls["n"] == 3:
                return 500
        return original(path)

    sandbox.state.take_failure = take_failure
    return original


def test_interrupted_csv_export_resumes_after_a_record_with_a_newline(app, linked, uneven, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.csv"
    original = fail_third_page(uneven)
    failed = run(app, link_id, "products", "--output", out, "--page-size", "10", "--concurrency", "1")
    assert failed.exit_code == 1 and "HTTP 500" in failed.output
    assert not out.exists()  # a CSV appears complete or not at all
    state = json.loads((tmp_path / "products.csv.state.json").read_text())
    assert state["last_id"] == 20 and state["bytes"] == (tmp_path / "products.csv.part.jsonl").stat().st_size
    with (tmp_path / "products.csv.part.jsonl").open("a") as f:
        f.write('{"id": 21, "sku": "SB-000')  # torn by a killed process
    uneven.state.take_failure = original
    resumed = run(app, link_id, "products", "--output", out, "--page-size", "10")
    assert resumed.exit_code == 0, resumed.output
    rows = read_csv(out)
    assert [int(r["id"]) for r in rows] == list(range(1, 61))
    assert rows[19]["name"] == 'Two "lines",\nand a comma'
    assert_round_trips(rows, products(uneven))


def test_interrupted_jsonl_export_resumes_from_its_state_file(app, linked, uneven, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.jsonl"
    original = fail_third_page(uneven)
    assert run(app, link_id, "products", "--output", out, "--page-size", "10", "--concurrency", "1").exit_code == 1
    # Records written after the last state update (killed before recording them) are not trusted:
    # they are fetched again, and here the store deleted them meanwhile.
    with out.open("a") as f:
        for record in products(uneven)[20:25]:
            f.write(json.dumps(record) + "\n")
    for record in products(uneven)[20:]:
        del uneven.state.products[record["sku"]]
    uneven.state.take_failure = original
    assert run(app, link_id, "products", "--output", out, "--page-size", "10").exit_code == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == products(uneven)[:20]
    assert not (tmp_path / "products.jsonl.state.json").exists()


def test_an_existing_file_that_is_not_an_interrupted_export_is_left_alone(app, linked, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.jsonl"
    out.write_text("my notes\n")
    refused = run(app, link_id, "products", "--output", out)
    assert refused.exit_code == 1 and "not an interrupted export" in refused.output
    assert out.read_text() == "my notes\n"


def test_resuming_with_other_options_is_refused(app, linked, sandbox, tmp_path):
    link_id, _ = linked
    out = tmp_path / "products.csv"
    fail_third_page(sandbox)
    assert run(app, link_id, "products", "--output", out, "--page-size", "10").exit_code == 1
    other = run(app, link_id, "products", "--output", out, "--since", "2024-01-01")
    assert other.exit_code == 1 and "interrupted export of products as csv" in other.output
