"""The node's HTTP API, over the node's service (:mod:`belep.node.service`).

Route modules (:mod:`belep.api.routes`), authentication as middleware
(:mod:`belep.api.auth`), refusals mapped to status codes
(:mod:`belep.api.errors`), the application (:mod:`belep.api.app`) and its
uvicorn server (:mod:`belep.api.server`); ``docs/spec/node.md`` §HTTP.
Endpoints and who may call them:

============================================  ==================  ==========================
``GET  /health``                              anyone              ready? peers connected?
``POST /v1/domains/{d}/transactions``         signed transaction  submit one (CBOR envelope)
``POST /v1/domains/{d}/transactions/batch``   signed transactions submit a CBOR list of them
``GET  /v1/domains/{d}/transactions/{hash}``  anyone with a hash  commit status (``?wait=ms``)
``GET  /v1/status``                           operator token      heights, views, peers, lag
``GET  /metrics``                             operator token      Prometheus text format
``GET  /v1/domains/{d}/blocks/{height}``      operator token      a block's header and hashes
``POST /v1/content``                          operator token      import a file, pin it
``GET  /ipfs/{cid}``                          peer or operator    trustless gateway
``GET  /openapi.json``                        anyone              this API as OpenAPI 3
============================================  ==================  ==========================

The package depends on :mod:`belep.node` (the service, and the node it
starts a server for); nothing under ``belep.node`` imports it.
"""
