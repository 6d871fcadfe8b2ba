"""The peer of bench/token_endpoint.py: FastMCP's in-memory OAuth provider (the version pinned in
bench/peer/requirements.txt) served by uvicorn, as its documentation shows. It keeps every
token in process memory and writes nothing to disk. Its /authorize answers with a code at
once (no login page). Runs in bench/.venv-peer, never in oauthd's venv:

    bench/.venv-peer/bin/python bench/peer/fastmcp_token.py --port 9200
"""

import argparse

import uvicorn
from fastmcp import FastMCP
from fastmcp.server.auth.auth import ClientRegistrationOptions
from fastmcp.server.auth.providers.in_memory import InMemoryOAuthProvider

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    auth = InMemoryOAuthProvider(
        base_url=base, client_registration_options=ClientRegistrationOptions(enabled=True)
    )
    app = FastMCP("bench", auth=auth).http_app(path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
