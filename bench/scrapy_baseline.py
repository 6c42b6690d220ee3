"""The Scrapy baseline of bench/crawl_bench.py, in its own process: the same site, the same concurrency and
session cookie, robots.txt obeyed, no delay. Prints one JSON line: pages, seconds, cpu_seconds (of this
process, between the engine's start and the spider's close)."""
from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    import scrapy
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess

    port, session, concurrency = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    clock: dict[str, float] = {}
    pages = {"count": 0}

    class Bench(scrapy.Spider):  # type: ignore[misc]
        name = "bench"

        async def start(self) -> Any:  # Scrapy 2.13+ (start_requests before)
            yield scrapy.Request(f"http://127.0.0.1:{port}/", cookies={"session": session})

        def parse(self, response: Any) -> Any:
            if response.status == 200:
                pages["count"] += 1
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, callback=self.parse)

    process = CrawlerProcess(settings={
        "CONCURRENT_REQUESTS": concurrency, "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency, "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": True, "COOKIES_ENABLED": True, "RETRY_ENABLED": False, "LOG_LEVEL": "ERROR",
        "TELNETCONSOLE_ENABLED": False})
    crawler = process.create_crawler(Bench)

    def started() -> None:
        clock["wall"], clock["cpu"] = time.perf_counter(), cpu()

    def closed() -> None:
        clock["seconds"], clock["cpu_seconds"] = time.perf_counter() - clock["wall"], cpu() - clock["cpu"]

    crawler.signals.connect(started, signal=signals.engine_started)
    crawler.signals.connect(closed, signal=signals.spider_closed)
    process.crawl(crawler)
    process.start()
    print(json.dumps({"pages": pages["count"], "seconds": clock["seconds"], "cpu_seconds": clock["cpu_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
