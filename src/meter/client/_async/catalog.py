"""The Catalog service: quotes, campaign estimates, packages, operations, publishing."""

from __future__ import annotations

from meter.client import requests as rq
from meter.client._async.transport import AsyncTransport
from meterpb.v1 import catalog_pb2 as cpb
from meterpb.v1 import meter_pb2 as pb


class AsyncCatalogCalls(AsyncTransport):
    """The Catalog service: quotes, estimates, packages, operations, publishing."""

    async def quote(
        self,
        operation: str,
        *,
        usage: pb.Usage | None = None,
        amount: int | None = None,
        workspace: str = "",
        catalog_version: int = 0,
    ) -> cpb.QuoteResponse:
        """The min, expected and max credits of an operation for a usage."""
        request = cpb.QuoteRequest(
            operation=operation, workspace_id=workspace, catalog_version=catalog_version
        )
        return await self._call(self._catalog.Quote, rq.priced(request, usage, amount))

    async def estimate_campaign(
        self,
        *,
        platforms: int,
        days: int,
        posts_per_week: int = 0,
        complexity: str = "",
        strategy_analysis: bool = False,
        rss_items: int = 0,
        regenerations: int | None = None,
        workspace: str = "",
        catalog_version: int = 0,
    ) -> cpb.EstimateCampaignResponse:
        """A campaign's min, expected and max credits; with a workspace, whether it fits.

        `sufficient`, `shortfall` and `available` are set only when a workspace is given:
        without one, ``HasField("sufficient")`` is false (and --json leaves them out).
        """
        request = cpb.EstimateCampaignRequest(
            platforms=platforms,
            duration_days=days,
            posts_per_week=posts_per_week,
            complexity=rq.complexity(complexity),
            strategy_analysis=strategy_analysis,
            rss_items=rss_items,
            workspace_id=workspace,
            catalog_version=catalog_version,
        )
        if regenerations is not None:
            request.regenerations = regenerations
        return await self._call(self._catalog.EstimateCampaign, request)

    async def list_packages(self) -> list[cpb.Package]:
        """The credit packages, smallest first."""
        found = await self._call(self._catalog.ListPackages, cpb.ListPackagesRequest())
        return list(found.packages)

    async def list_operations(self, catalog_version: int = 0) -> cpb.ListOperationsResponse:
        """The cost rules of the current (or a given) catalog version."""
        request = cpb.ListOperationsRequest(catalog_version=catalog_version)
        return await self._call(self._catalog.ListOperations, request)

    async def publish_catalog(
        self,
        document: str,
        *,
        format: str | None = None,
        description: str = "",
        request_id: str | None = None,
    ) -> cpb.PublishCatalogResponse:
        """Publish a new catalog version from a TOML or JSON document.

        Without a request id one is made for this call, so its retries stay idempotent.

        Raises:
            InvalidArgument: the document's violations name each rule and field.
        """
        request = cpb.PublishCatalogRequest(
            request_id=request_id or rq.new_request_id("catalog"),
            document=document,
            format=rq.document_format(format),
            description=description,
        )
        return await self._call(self._catalog.PublishCatalog, request)
