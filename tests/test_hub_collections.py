"""Hub collections: the embedded Hub's collection endpoints answer the unmodified huggingface_hub client with the
Hub's rules, and `hfdistill collection` / `publish.collection` gather a run's models in stage order with a note on
each — idempotently (a re-run updates notes and order, never duplicates)."""

from __future__ import annotations

import json

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hfdistill.cli import main
from hfdistill.errors import HubError
from hfdistill.hub import push_run
from hfdistill.publish.collection import collection
from hfdistill.schema import PublishConfig
from tests.hub_fixtures import TOKEN

QUIET = {"log": lambda _m: None, "progress": False, "retry_waits": (0.05,)}
REPOS = [f"me/tiny-{s}-sst2" for s in ("teacher", "student", "student-8bit")]
TINY = PublishConfig(repo_prefix="me/tiny")  # how `published_hub` pushed the run


def _status(fn) -> int:
    with pytest.raises(HfHubHTTPError) as err:
        fn()
    return err.value.response.status_code


def test_collection_endpoints_follow_the_hubs_rules(hub_server):
    api, anonymous = HfApi(endpoint=hub_server.url, token=TOKEN), HfApi(endpoint=hub_server.url, token=False)
    for name in ("a", "b", "c"):
        api.create_repo(f"me/{name}")
    api.create_repo("me/hidden", private=True)
    coll = api.create_collection("My run: v1", namespace="me", description="three models")
    assert coll.slug.startswith("me/my-run-v1-") and coll.owner["name"] == "me" and coll.items == []
    api.add_collection_item(coll.slug, "me/a", "model", note="first")
    api.add_collection_item(coll.slug, "me/b", "model")
    coll = api.add_collection_item(coll.slug, "me/hidden", "model")
    assert _status(lambda: api.add_collection_item(coll.slug, "me/a", "model")) == 409  # no duplicates
    assert api.add_collection_item(coll.slug, "me/a", "model", exists_ok=True).slug == coll.slug
    assert _status(lambda: api.add_collection_item(coll.slug, "me/missing", "model")) == 404
    assert api.create_collection("My run: v1", namespace="me", exists_ok=True).slug == coll.slug

    b = next(i for i in coll.items if i.item_id == "me/b")
    api.update_collection_item(coll.slug, b.item_object_id, note="second", position=0)
    got = api.get_collection(coll.slug)
    assert [(i.item_id, i.position, i.note) for i in got.items] == \
        [("me/b", 0, "second"), ("me/a", 1, "first"), ("me/hidden", 2, None)]
    assert [i.item_id for i in anonymous.get_collection(coll.slug).items] == ["me/b", "me/a"]  # private repo hidden

    private = api.create_collection("Secret", namespace="me", private=True)
    assert [c.slug for c in anonymous.list_collections(owner="me")] == [coll.slug]
    assert {c.slug for c in api.list_collections(owner="me")} == {coll.slug, private.slug}
    assert [c.slug for c in api.list_collections(item="models/me/a")] == [coll.slug]
    assert _status(lambda: anonymous.get_collection(private.slug)) == 404
    assert _status(lambda: anonymous.add_collection_item(coll.slug, "me/c", "model")) == 401
    assert _status(lambda: HfApi(endpoint=hub_server.url, token="hf_wrongWrongWrong").create_collection("x")) == 401
    assert _status(lambda: api.create_collection("x", namespace="someone-else")) == 403

    api.delete_collection_item(coll.slug, b.item_object_id)
    assert [i.item_id for i in api.get_collection(coll.slug).items] == ["me/a", "me/hidden"]
    api.delete_repo("me/a")  # a deleted repo leaves the collection
    assert [i.item_id for i in api.get_collection(coll.slug).items] == ["me/hidden"]
    assert api.update_collection_metadata(coll.slug, title="Renamed").title == "Renamed"
    api.delete_collection(coll.slug)
    assert _status(lambda: api.get_collection(coll.slug)) == 404

    page = httpx2.get(f"{hub_server.url}/", timeout=10).text  # the web page lists public collections only
    assert "Secret" not in page
    api.create_collection("Shown", namespace="me")
    assert ">Shown</a>" in httpx2.get(f"{hub_server.url}/", timeout=10).text


def test_a_runs_models_are_gathered_in_stage_order_with_notes_and_a_rerun_only_updates(published_hub):
    api = HfApi(endpoint=published_hub.url)
    run = published_hub.run
    first = collection([run], "Tiny run", publish=TINY, endpoint=published_hub.url, **QUIET)
    assert first.added == REPOS and first.updated == [] and first.title == "Tiny run"
    items = api.get_collection(first.slug).items
    assert [i.item_id for i in items] == REPOS
    assert items[0].note == "teacher (finetune), SST2 score 0.9120 · 1.05M params · 4.0 MB · 4.00 ms (CPU, bs 1)"
    assert items[2].note.startswith("student-8bit (quantize), SST2 score 0.8810 · 1.04M params · ")
    assert items[2].note.endswith(" · 1.60 ms (CPU, bs 1) · 96.6 % of teacher")

    again = collection([run], "Tiny run", publish=TINY, endpoint=published_hub.url, **QUIET)
    assert (again.slug, again.added, again.updated, again.unchanged) == (first.slug, [], [], REPOS)

    metrics = run / "student" / "sst2" / "metrics.json"  # a re-evaluated model, a hand-moved item
    m = json.loads(metrics.read_text())
    m["score"] = m["metrics"]["accuracy"] = 0.9
    metrics.write_text(json.dumps(m))
    api.update_collection_item(first.slug, items[2].item_object_id, position=0)
    third = collection([run], "Tiny run", publish=TINY, endpoint=published_hub.url, **QUIET)
    assert third.added == [] and REPOS[1] in third.updated  # its note; the order is restored below
    items = api.get_collection(first.slug).items
    assert [i.item_id for i in items] == REPOS and "SST2 score 0.9000" in items[1].note
    assert len(list(api.list_collections(owner="me"))) == 1


def test_publish_collection_in_the_recipe_gathers_the_models_on_push_and_cli_errors_are_one_line(published_hub,
                                                                                                capsys):
    push_run(published_hub.run, PublishConfig(repo_prefix="me/tiny", collection="From the recipe"),
             endpoint=published_hub.url, log=lambda _m: None)
    (coll,) = HfApi(endpoint=published_hub.url).list_collections(owner="me")
    assert coll.title == "From the recipe" and coll.items and coll.items[0].item_id == REPOS[0]

    with pytest.raises(HubError, match=r"collection 'Elsewhere': tester/tiny-teacher-sst2 is not on the Hub: "
                                       r"push the run first"):
        collection([published_hub.run], "Elsewhere", publish=PublishConfig(repo_prefix="tester/tiny"),
                   endpoint=published_hub.url, **QUIET)
    argv = ["collection", str(published_hub.run), "--title", "T", "--endpoint", published_hub.url]
    assert main(argv + ["--repo-prefix", "me/tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["title"] == "T" and out["added"] == REPOS
    assert main(argv + ["--quiet"]) == 2  # the run's recipe names no prefix: whoami's `local`, where nothing was pushed
    err = capsys.readouterr().err
    assert err.startswith("hfdistill: error: collection 'T': local/tinyrun-teacher-sst2 is not on the Hub")
    assert err.count("\n") == 1
