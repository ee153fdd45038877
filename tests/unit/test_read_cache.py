"""The read cache alone (tornado_app/storage/read_cache.py): what it keeps, for how long, and
every way a write empties it."""

import asyncio
from types import SimpleNamespace

from tornado_app.storage.read_cache import MAX_AGE, ReadCache, WriteWatch, cache_wanted


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def cached(cache, collection="posts", key=1, doc=None):
    cache.put(collection, key, doc or {"_id": key}, cache.generation(collection))


def command(name, target, request_id=1):
    return SimpleNamespace(command_name=name, command={name: target}, request_id=request_id)


def test_a_document_read_is_served_from_the_cache():
    cache = ReadCache()
    cached(cache, doc={"_id": 1, "title": "a"})
    assert cache.get("posts", 1) == {"_id": 1, "title": "a"}
    assert (cache.hits, cache.misses) == (1, 0)


def test_a_document_never_read_is_a_miss():
    cache = ReadCache()
    assert cache.get("posts", 1) is None
    assert cache.misses == 1


def test_a_write_to_the_collection_empties_it():
    cache = ReadCache()
    cached(cache, key=1)
    cached(cache, key=2)
    cache.written("posts")
    assert cache.get("posts", 1) is None and cache.get("posts", 2) is None
    assert len(cache) == 0


def test_a_write_to_another_collection_keeps_it():
    cache = ReadCache()
    cached(cache, "posts", 1)
    cache.written("products")
    assert cache.get("posts", 1) is not None


def test_a_write_to_every_collection_empties_all():
    cache = ReadCache()
    cached(cache, "posts", 1)
    cached(cache, "products", 1)
    cache.written(None)
    assert cache.get("posts", 1) is None and cache.get("products", 1) is None


def test_a_read_overlapping_a_write_is_not_kept():
    cache = ReadCache()
    generation = cache.generation("posts")  # the read starts
    cache.written("posts")                  # a write starts while it runs
    cache.put("posts", 1, {"_id": 1}, generation)
    assert cache.get("posts", 1) is None


def test_a_read_overlapping_a_write_to_every_collection_is_not_kept():
    cache = ReadCache()
    generation = cache.generation("posts")
    cache.written(None)
    cache.put("posts", 1, {"_id": 1}, generation)
    assert cache.get("posts", 1) is None


def test_a_document_is_read_again_after_max_age():
    clock = Clock()
    cache = ReadCache(clock=clock)
    cached(cache)
    clock.now += MAX_AGE - 0.01
    assert cache.get("posts", 1) is not None
    clock.now += 0.02
    assert cache.get("posts", 1) is None
    assert len(cache) == 0


def test_the_least_recently_read_goes_first_past_the_limit():
    cache = ReadCache(max_entries=2)
    cached(cache, key=1)
    cached(cache, key=2)
    cache.get("posts", 1)
    cached(cache, key=3)
    assert len(cache) == 2
    assert cache.get("posts", 2) is None
    assert cache.get("posts", 1) is not None and cache.get("posts", 3) is not None


def test_the_limit_holds_across_collections():
    cache = ReadCache(max_entries=2)
    cached(cache, "posts", 1)
    cached(cache, "posts", 2)
    cached(cache, "products", 1)
    assert len(cache) == 2
    assert cache.get("products", 1) is not None


def test_the_bytes_held_stay_within_the_limit():
    big = {"_id": 1, "content": "x" * 10_000}
    cache = ReadCache(max_bytes=25_000)
    for key in range(5):
        cached(cache, key=key, doc={**big, "_id": key})
    assert cache.bytes <= 25_000 and len(cache) == 2
    assert cache.get("posts", 4) is not None and cache.get("posts", 0) is None


def test_a_document_larger_than_the_limit_is_not_kept():
    cache = ReadCache(max_bytes=5_000)
    cached(cache, doc={"_id": 1, "content": "x" * 10_000})
    assert cache.get("posts", 1) is None and cache.bytes == 0


def test_the_bytes_of_an_emptied_collection_are_given_back():
    cache = ReadCache()
    cached(cache, "posts", 1, {"_id": 1, "content": "x" * 1000})
    cached(cache, "products", 1)
    kept = cache.bytes
    cache.written("posts")
    assert 0 < cache.bytes < kept - 1000
    cache.written(None)
    assert cache.bytes == 0


def test_a_write_command_empties_its_collection_when_sent_and_when_ended():
    cache = ReadCache()
    watch = WriteWatch(cache)
    cached(cache)
    watch.started(command("update", "posts"))
    assert cache.get("posts", 1) is None
    cached(cache)  # read while the update runs: kept until the update ends
    watch.succeeded(command("update", "posts"))
    assert cache.get("posts", 1) is None


def test_a_failed_write_command_empties_its_collection_too():
    cache = ReadCache()
    watch = WriteWatch(cache)
    watch.started(command("findAndModify", "posts"))
    cached(cache)
    watch.failed(command("findAndModify", "posts"))
    assert cache.get("posts", 1) is None


def test_a_read_command_changes_nothing():
    cache = ReadCache()
    watch = WriteWatch(cache)
    cached(cache)
    for name in ("find", "getMore", "aggregate", "count", "listIndexes"):
        watch.started(command(name, "posts"))
        watch.succeeded(command(name, "posts"))
    assert cache.get("posts", 1) is not None


def test_an_unknown_command_empties_every_collection():
    cache = ReadCache()
    watch = WriteWatch(cache)
    cached(cache, "posts", 1)
    watch.started(command("dropDatabase", 1))
    assert cache.get("posts", 1) is None
    cached(cache, "posts", 1)
    watch.succeeded(command("dropDatabase", 1))
    assert cache.get("posts", 1) is None


def test_auto_is_on_only_for_the_one_writer_of_a_ferretdb():
    assert cache_wanted("auto", is_ferretdb=True, only_writer=True)
    assert not cache_wanted("auto", is_ferretdb=True, only_writer=False)
    assert not cache_wanted("auto", is_ferretdb=False, only_writer=True)
    assert cache_wanted("on", is_ferretdb=False, only_writer=False)
    assert not cache_wanted("off", is_ferretdb=True, only_writer=True)


class Fetches:
    """A fetch the test lets finish: how many were made, and each one's answer."""

    def __init__(self):
        self.started = 0
        self.gate = asyncio.get_running_loop().create_future()  # made inside the test's loop

    async def __call__(self):
        self.started += 1
        await self.gate
        return self.gate.result()


def run(coroutine):
    return asyncio.run(coroutine)


def test_readers_that_miss_together_share_one_fetch():
    async def scenario():
        cache, fetch = ReadCache(), Fetches()
        readers = [asyncio.ensure_future(cache.read("posts", 1, fetch)) for _ in range(5)]
        await asyncio.sleep(0)
        fetch.gate.set_result({"_id": 1})
        assert await asyncio.gather(*readers) == [{"_id": 1}] * 5
        assert fetch.started == 1
        assert cache.get("posts", 1) == {"_id": 1}
    run(scenario())


def test_a_reader_after_a_write_does_not_share_a_fetch_begun_before_it():
    async def scenario():
        cache = ReadCache()
        old, new = Fetches(), Fetches()
        before = asyncio.ensure_future(cache.read("posts", 1, old))
        await asyncio.sleep(0)
        cache.written("posts")  # a write ends while the first read is under way
        after = asyncio.ensure_future(cache.read("posts", 1, new))
        await asyncio.sleep(0)
        old.gate.set_result({"_id": 1, "version": 1})
        new.gate.set_result({"_id": 1, "version": 2})
        assert (await before)["version"] == 1 and (await after)["version"] == 2
        assert (old.started, new.started) == (1, 1)
        assert cache.get("posts", 1)["version"] == 2
    run(scenario())


def test_a_failed_fetch_fails_every_reader_sharing_it_and_is_not_kept():
    async def scenario():
        cache, fetch = ReadCache(), Fetches()
        readers = [asyncio.ensure_future(cache.read("posts", 1, fetch)) for _ in range(3)]
        await asyncio.sleep(0)
        fetch.gate.set_exception(TimeoutError("database"))
        results = await asyncio.gather(*readers, return_exceptions=True)
        assert all(isinstance(r, TimeoutError) for r in results) and fetch.started == 1
        assert cache.get("posts", 1) is None
    run(scenario())


def test_readers_sharing_a_cancelled_fetch_read_on_their_own():
    async def scenario():
        cache, first = ReadCache(), Fetches()
        leader = asyncio.ensure_future(cache.read("posts", 1, first))
        await asyncio.sleep(0)
        follower = asyncio.ensure_future(cache.read("posts", 1, first))
        await asyncio.sleep(0)
        leader.cancel()  # cancels the gate it awaited too
        await asyncio.sleep(0)
        first.gate = asyncio.get_running_loop().create_future()
        first.gate.set_result({"_id": 1})
        assert await follower == {"_id": 1}
    run(scenario())
