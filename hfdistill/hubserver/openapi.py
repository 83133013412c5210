"""The request bodies the embedded Hub accepts (pydantic models) and its OpenAPI document, built from the same
route table as the app.

Why one table: handlers validate bodies with these models (a malformed body is a 400 naming the field, never a
500), and `/openapi.json` describes exactly those models and routes, so a schema-driven fuzzer (schemathesis, in the
tests) attacks the API the server really has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema

from hfdistill.hubserver.storage import StorageError


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the client sends more than we read (e.g. "sdk", "transfers")


class CreateRepo(Body):
    name: str
    organization: str | None = None
    private: bool | None = None
    visibility: str | None = None
    type: str | None = None


class DeleteRepo(Body):
    name: str
    organization: str | None = None
    type: str | None = None


class RepoSettings(Body):
    private: bool | None = None
    visibility: str | None = None


class NewBranch(Body):
    startingPoint: str | None = None


class NewTag(Body):
    tag: str
    message: str | None = None


class PreuploadFile(Body):
    path: str
    size: int = Field(0, ge=0)
    sample: str = ""


class Preupload(Body):
    files: list[PreuploadFile]


class LfsObject(Body):
    oid: str
    size: int = Field(ge=0)


class LfsBatch(Body):
    operation: str
    objects: list[LfsObject]


class PathsInfo(Body):
    paths: list[str]
    expand: bool = False


class YamlDocument(Body):
    content: str = ""
    repoType: str | None = None


class NewCollection(Body):
    title: str
    namespace: str | None = None
    description: str | None = None
    private: bool | None = None


class CollectionPatch(Body):
    title: str | None = None
    description: str | None = None
    private: bool | None = None
    theme: str | None = Field(None, max_length=20)
    position: int | None = Field(None, ge=0, le=1_000_000)


class ItemRef(Body):
    id: str
    type: str


class NewItem(Body):
    item: ItemRef
    note: str | None = None


class ItemPatch(Body):
    note: str | None = None
    position: int | None = Field(None, ge=0, le=1_000_000)


class CommitHeader(Body):
    summary: str = ""
    description: str = ""
    parentCommit: str | None = None


class InlineFile(Body):
    path: str
    content: str
    encoding: str | None = None


class LfsFile(Body):
    path: str
    oid: str
    size: int | None = Field(None, ge=0)


class DeletedPath(Body):
    path: str


# One NDJSON line of a commit: {"key": ..., "value": ...}.
COMMIT_LINES: dict[str, type[Body]] = {"header": CommitHeader, "file": InlineFile, "lfsFile": LfsFile,
                                       "deletedFile": DeletedPath, "deletedFolder": DeletedPath}
NDJSON = "application/x-ndjson"


def parse(model: type[Body], data: Any) -> Any:
    """`data` (JSON bytes or already decoded) as `model`, or a 400 naming the first bad field."""
    try:
        if isinstance(data, (bytes, str)):
            return model.model_validate_json(data or b"{}")
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "body"
        raise StorageError(400, f"malformed request: {where}: {err['msg']}") from None


@dataclass(frozen=True)
class Endpoint:
    """One route: the app's Route and the schema's operation come from it."""

    methods: tuple[str, ...]
    path: str
    handler: Callable
    body: Any = None                 # a Body model, NDJSON (a commit), "binary" (an LFS upload) or None
    query: tuple[str, ...] = ()
    form: bool = False               # the body may also come form-encoded (paths-info)


def document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints`."""
    models = sorted({ep.body for ep in endpoints if isinstance(ep.body, type)} | set(COMMIT_LINES.values()),
                    key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template="#/components/schemas/{model}")
    ref = lambda m: {"$ref": f"#/components/schemas/{m.__name__}"}  # noqa: E731
    commit_line = {"oneOf": [{"type": "object", "required": ["key", "value"],
                              "properties": {"key": {"const": k}, "value": ref(m)}} for k, m in COMMIT_LINES.items()]}
    paths: dict[str, Any] = {}
    for ep in endpoints:
        path = re.sub(r"\{(\w+):path\}", r"{\1}", ep.path)
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for n in re.findall(r"\{(\w+)", ep.path)]
        params += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in ep.query]
        for method in ep.methods:
            op: dict[str, Any] = {"operationId": f"{method.lower()}_{ep.handler.__name__}",
                                  "summary": (ep.handler.__doc__ or ep.handler.__name__).strip().splitlines()[0],
                                  "parameters": params,
                                  "responses": {"default": {"description": "JSON answer, or an error with "
                                                                           "X-Error-Code / X-Error-Message"}}}
            if ep.body is NDJSON:
                content = {NDJSON: {"schema": {"type": "array", "items": commit_line}}}
            elif ep.body == "binary":
                content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
            elif ep.body is not None:
                content = {"application/json": {"schema": ref(ep.body)}}
                if ep.form:
                    content["application/x-www-form-urlencoded"] = {"schema": ref(ep.body)}
            if ep.body is not None:
                op["requestBody"] = {"required": True, "content": content}
            paths.setdefault(path, {})[method.lower()] = op
    return {"openapi": "3.1.0", "info": {"title": "hfdistill embedded Hub", "version": "1"}, "paths": paths,
            "components": {"schemas": defs.get("$defs", {})}}
