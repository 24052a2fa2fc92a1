"""The meter.v1.Catalog servicer."""

from __future__ import annotations

from typing import Any

from meter import errors
from meter.catalog.model import Quote
from meter.catalog.service import CatalogService
from meter.ledger.validation import ID_RE
from meter.rpc import convert
from meter.rpc.handlers import unary
from meter.storage.queries import LedgerQueries
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import catalog_pb2_grpc

_FORMATS = {0: None, 1: "toml", 2: "json"}


class CatalogServicer(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, catalog: CatalogService, queries: LedgerQueries) -> None:
        self.catalog = catalog
        self.queries = queries

    @unary
    async def ListOperations(
        self, request: cpb.ListOperationsRequest, context: Any
    ) -> cpb.ListOperationsResponse:
        cat = await self.catalog.version(_version(request.catalog_version))
        return cpb.ListOperationsResponse(
            catalog_version=cat.version,
            operations=[convert.operation(r, cat.version) for r in cat.rules.values()],
        )

    @unary
    async def GetOperation(self, request: cpb.GetOperationRequest, context: Any) -> cpb.Operation:
        if not request.operation or len(request.operation) > 64:
            raise errors.invalid_field("operation", "required: 1-64 characters")
        cat = await self.catalog.version(_version(request.catalog_version))
        return convert.operation(cat.rule(request.operation), cat.version)

    @unary
    async def Quote(self, request: cpb.QuoteRequest, context: Any) -> cpb.QuoteResponse:
        if request.HasField("amount"):
            if not 0 <= request.amount <= 10**12:
                raise errors.invalid_field("amount", "must be between 0 and 1000000000000")
            q = Quote(request.amount, request.amount, request.amount)
            return convert.quote(request.operation, q, self.catalog.current.version)
        if not request.operation or len(request.operation) > 64:
            raise errors.invalid_field("operation", "required: 1-64 characters")
        q, version = await self.catalog.quote(
            request.operation, convert.usage(request.usage), _version(request.catalog_version)
        )
        return convert.quote(request.operation, q, version)

    @unary
    async def EstimateCampaign(
        self, request: cpb.EstimateCampaignRequest, context: Any
    ) -> cpb.EstimateCampaignResponse:
        if request.workspace_id and not ID_RE.fullmatch(request.workspace_id):
            raise errors.invalid_field(
                "workspace_id", "must be 1-128 characters of [A-Za-z0-9._:-]"
            )
        est, version = await self.catalog.estimate(
            convert.plan(request), _version(request.catalog_version)
        )
        response = convert.estimate(est, version)
        if request.workspace_id:
            balance = await self.queries.balance(request.workspace_id)
            response.available = balance.available
            response.sufficient = balance.available >= est.max
            response.shortfall = max(est.max - balance.available, 0)
            pkg = self.catalog.suggest_package(response.shortfall)
            if pkg is not None:
                response.suggested_package.CopyFrom(convert.package(pkg))
        return response

    @unary
    async def ListPackages(
        self, request: cpb.ListPackagesRequest, context: Any
    ) -> cpb.ListPackagesResponse:
        return cpb.ListPackagesResponse(
            packages=[convert.package(p) for p in self.catalog.packages]
        )

    @unary
    async def PublishCatalog(
        self, request: cpb.PublishCatalogRequest, context: Any
    ) -> cpb.PublishCatalogResponse:
        if request.request_id and not ID_RE.fullmatch(request.request_id):
            raise errors.invalid_field("request_id", "must be 1-128 characters of [A-Za-z0-9._:-]")
        if request.format not in _FORMATS:
            raise errors.invalid_field("format", f"unknown document format {request.format}")
        if len(request.description) > 500:
            raise errors.invalid_field("description", "at most 500 characters")
        cat, created = await self.catalog.publish(
            request.document, _FORMATS[request.format], request.description, request.request_id
        )
        return cpb.PublishCatalogResponse(
            catalog_version=cat.version,
            operations=[convert.operation(r, cat.version) for r in cat.rules.values()],
            create_time=convert.ts(created),
        )


# Versions are stored as PostgreSQL integers; a larger number cannot name one.
MAX_VERSION = 2**31 - 1


def _version(v: int) -> int:
    if not 0 <= v <= MAX_VERSION:
        raise errors.invalid_field("catalog_version", f"must be between 0 and {MAX_VERSION}")
    return v
