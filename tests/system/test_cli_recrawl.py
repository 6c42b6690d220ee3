"""The `quaero` CLI for recurring crawls: what a run found (jobs show), search, export as JSON Lines (all,
or only what changed), deleting a run, and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quaero.testing.harness import CrawlHarness
from tests.support.cli import Cli, one_line_error
from tests.support.sites import signed_in_to_wiki


def test_show_search_export_and_delete_runs_from_the_command_line(harness: CrawlHarness, cli: Cli, wiki: Any) -> None:
    site = wiki(5)
    signed_in_to_wiki(harness, site, "cli-wiki")
    definition = harness.definition([site.url(0)], "cli-wiki", max_depth=5)
    first = harness.outcome(harness.start(definition).parent_job_id).parent.id
    site.change(3)
    site.remove(4)
    second = harness.outcome(harness.start(definition).parent_job_id).parent.id

    shown = cli("jobs", "show", second)
    assert shown.returncode == 0, shown.stderr
    # Page 3 changed and 4 went; page 1, which linked to 4, changed with it.
    assert "0 new, 2 changed, 2 unchanged, 1 gone" in shown.stdout

    found = cli("docs", "search", "wiki page 3", "--definition", definition)
    assert found.returncode == 0, found.stderr
    assert site.url(3) in found.stdout and "version 1" in found.stdout and first not in found.stdout

    exported = cli("docs", "export", "--run", second)
    assert exported.returncode == 0, exported.stderr
    lines: list[dict[str, Any]] = [json.loads(line) for line in exported.stdout.splitlines()]
    assert sorted(line["url"] for line in lines) == sorted(site.url(n) for n in (0, 1, 2, 3))
    assert all(line["text"].startswith("wiki page") for line in lines)

    changes = [json.loads(line) for line in cli("docs", "export", "--run", second, "--changed").stdout.splitlines()]
    assert sorted((line["kind"], line["url"]) for line in changes) == [
        ("changed", site.url(1)), ("changed", site.url(3)), ("gone", site.url(4))]
    assert "text" not in next(line for line in changes if line["kind"] == "gone")

    removed = cli("jobs", "rm", first)
    assert removed.returncode == 0, removed.stderr
    assert "6 jobs" in removed.stdout and "5 documents" in removed.stdout
    assert "JOB_NOT_FOUND" in one_line_error(cli("jobs", "show", first))
    assert "OR must" in one_line_error(cli("docs", "search", "OR"))
    assert "unknown kind" in one_line_error(cli("docs", "ls", "--job", second, "--kind", "odd"))


def test_a_schedule_written_in_toml_shows_its_next_runs_and_pauses_and_resumes(harness: CrawlHarness, cli: Cli,
                                                                               tmp_path: Path) -> None:
    definition = tmp_path / "nightly.toml"
    definition.write_text('id = "nightly"\nschedule = "30 2 * * *"\ntimezone = "Europe/Berlin"\njitter = "5m"\n'
                          'overlap = "buffer_one"\ncatchup_window = "2h"\nkeep_runs = 7\n'
                          '[crawl]\nstart_urls = ["https://wiki.example.com/"]\n')
    applied = cli("definitions", "apply", str(definition))
    assert applied.returncode == 0, applied.stderr
    listed = cli("definitions", "ls").stdout
    assert "30 2 * * * (Europe/Berlin)" in listed
    shown = cli("definitions", "show", "nightly").stdout
    assert "overlap buffer_one" in shown and "keep_runs 7" in shown and shown.count("next run") == 3
    paused = cli("definitions", "pause", "nightly")
    assert paused.returncode == 0 and "paused the schedule of nightly" in paused.stdout
    assert "paused" in cli("definitions", "ls").stdout and "next run" not in cli("definitions", "show",
                                                                                 "nightly").stdout
    resumed = cli("definitions", "resume", "nightly")
    assert resumed.returncode == 0 and "next run" in resumed.stdout
    # Mistakes are named with the field and what to write.
    definition.write_text('id = "bad"\nschedule = "at two"\n[crawl]\nstart_urls = ["https://wiki.example.com/"]\n')
    assert "schedule.cron" in one_line_error(cli("definitions", "apply", str(definition)))
    definition.write_text('id = "bad"\ntimezone = "UTC"\n[crawl]\nstart_urls = ["https://wiki.example.com/"]\n')
    assert "belong to a schedule" in one_line_error(cli("definitions", "apply", str(definition)))
    plain = tmp_path / "plain.toml"
    plain.write_text('id = "plain"\n[crawl]\nstart_urls = ["https://wiki.example.com/"]\n')
    assert cli("definitions", "apply", str(plain)).returncode == 0
    assert "has no schedule" in one_line_error(cli("definitions", "pause", "plain"))
