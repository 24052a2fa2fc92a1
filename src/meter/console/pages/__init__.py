"""The console's routes: one module per group of pages."""

from __future__ import annotations

from starlette.routing import Route

from meter.console.pages import auth, catalog, history, usage, workspace, writes

WS = "/w/{ws:str}"

ROUTES = [
    Route("/", auth.home, name="home"),
    Route("/signin", auth.signin, methods=["GET", "POST"], name="signin"),
    Route("/signout", auth.signout, methods=["POST"], name="signout"),
    Route(WS, workspace.overview, name="workspace"),
    Route(WS + "/live", workspace.live, name="live"),
    Route(WS + "/lots", workspace.lots, name="lots"),
    Route(WS + "/holds", workspace.holds, name="holds"),
    Route(WS + "/audit", workspace.audit, name="audit"),
    Route(WS + "/history", history.history, name="history"),
    Route(WS + "/history.csv", history.history_csv, name="history_csv"),
    Route(WS + "/usage", usage.usage, name="usage"),
    Route(WS + "/grant", writes.grant_form, name="grant"),
    Route(WS + "/grant", writes.grant_review, methods=["POST"], name="grant_review"),
    Route(WS + "/grant/confirm", writes.grant_confirm, methods=["POST"], name="grant_confirm"),
    Route(WS + "/adjust", writes.adjust_form, name="adjust"),
    Route(WS + "/adjust", writes.adjust_review, methods=["POST"], name="adjust_review"),
    Route(WS + "/adjust/confirm", writes.adjust_confirm, methods=["POST"], name="adjust_confirm"),
    Route("/catalog", catalog.catalog, name="catalog"),
    Route("/packages", catalog.packages, name="packages"),
    Route("/estimate", catalog.estimate, name="estimate"),
    Route("/webhooks", catalog.webhooks, name="webhooks"),
    Route("/webhooks/{endpoint:str}", catalog.deliveries, name="deliveries"),
]
