"""Metadata merges run inside the database: concurrent writers never lose each other's keys."""
from __future__ import annotations

import threading

from manager_service.storage import Stores


def test_concurrent_merges_of_distinct_keys_lose_nothing(stores: Stores) -> None:
    job = stores.jobs.create(parent_id="", type="t", name="", config={}, metadata={"seed": 1}, request_id="")
    writers, per_writer = 12, 80
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            for n in range(per_writer):
                stores.jobs.update_json(job.id, "metadata", {f"w{index}": {f"k{n}": n}}, replace=False, etag="")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    metadata = stores.jobs.get(job.id).metadata
    assert sum(len(inner) for key, inner in metadata.items() if key != "seed") == writers * per_writer
    assert metadata["seed"] == 1 and metadata["w7"]["k79"] == 79
