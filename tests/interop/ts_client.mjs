// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk, pinned in package.json)
// against a live oauthd, driven by tests/interop/test_typescript_sdk.py:
//
//   node ts_client.mjs --url http://127.0.0.1:PORT/mcp --username U --password P \
//        [--auth-method none|client_secret_basic|client_secret_post] [--save-state FILE]
//   node ts_client.mjs --url ... --resume FILE
//
// --save-state writes the registration and tokens to FILE after the refresh and skips the
// replay (which would end the grant); --resume reads them (after oauthd restarted, say),
// and without any login: initialize, tools/list, tools/call, a refresh, tools/call.
//
// Flow: 401 -> discovery -> DCR -> code + PKCE, with redirectToAuthorization() playing the
// browser through oauthd's login and consent forms (fetch + a tiny cookie jar) -> finishAuth
// -> initialize, tools/list, tools/call add and countdown (progress) -> a mid-session refresh
// (tokens() hands out a stale access token once, so oauthd answers 401 and the SDK refreshes)
// -> tools/call again on the same Mcp-Session-Id -> replay of the superseded refresh token.
// Prints one JSON line (`{"ok": true, ...}` or `{"ok": false, "error": ...}`); exit 0 or 1.
//
// Machine clients (client credentials grant, no person, no DCR), with the SDK's own providers
// of client/auth-extensions.js, for a client made beforehand with `oauthd clients add`:
//
//   node ts_client.mjs --url ... --issuer ISSUER --client-credentials CLIENT_ID \
//        --client-secret SECRET [--secret-method client_secret_basic|client_secret_post]
//   node ts_client.mjs --url ... --issuer ISSUER --private-key-jwt CLIENT_ID \
//        --private-key-pem FILE --alg ES256|RS256
//
// ClientCredentialsProvider has no option for the secret's method: it uses the one its
// client information names, else the server's first choice (client_secret_basic), so
// client_secret_post is chosen through its saveClientInformation(). PrivateKeyJwtProvider
// signs a fresh assertion (PKCS#8 PEM key) for every token request.

import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
    ClientCredentialsProvider,
    PrivateKeyJwtProvider
} from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const { values: args } = parseArgs({
    options: {
        url: { type: 'string' },
        username: { type: 'string' },
        password: { type: 'string' },
        'auth-method': { type: 'string', default: 'none' },
        'save-state': { type: 'string' },
        resume: { type: 'string' },
        issuer: { type: 'string' },
        'client-credentials': { type: 'string' },
        'client-secret': { type: 'string' },
        'secret-method': { type: 'string', default: 'client_secret_basic' },
        'private-key-jwt': { type: 'string' },
        'private-key-pem': { type: 'string' },
        alg: { type: 'string', default: 'ES256' },
        timeout: { type: 'string', default: '40' }
    }
});
const MCP_URL = new URL(args.url);
const ORIGIN = MCP_URL.origin;
// Never listened on: the browser stops at the redirect and hands the code over.
const REDIRECT_URL = 'http://127.0.0.1:53682/callback';

// -- every HTTP request the SDK makes ---------------------------------------------------------

const requests = [];

function headersOf(init) {
    return new Headers(init?.headers ?? {});
}

async function recordingFetch(input, init) {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const headers = headersOf(init);
    const entry = {
        method: init?.method ?? 'GET',
        path: url.pathname,
        session: headers.get('mcp-session-id'),
        bearer: (headers.get('authorization') ?? '').match(/^Bearer (.+)$/i)?.[1] ?? null
    };
    if (url.pathname === '/token' && init?.body) {
        const form = new URLSearchParams(String(init.body));
        entry.grant_type = form.get('grant_type');
        // How the client authenticated: a Basic header, a secret in the body, an assertion.
        entry.client_auth = [
            /^Basic /i.test(headers.get('authorization') ?? '') ? 'basic' : null,
            form.has('client_secret') ? 'post' : null,
            form.has('client_assertion') ? form.get('client_assertion_type') : null
        ].filter(Boolean);
    }
    if (url.pathname === MCP_URL.pathname && typeof init?.body === 'string') {
        try {
            entry.rpc = JSON.parse(init.body).method ?? 'response';
        } catch {
            entry.rpc = '?';
        }
    }
    const response = await fetch(input, init);
    entry.status = response.status;
    requests.push(entry);
    return response;
}

// -- the browser: oauthd's /authorize -> /login -> /consent -> redirect_uri --------------------

const cookies = new Map();

function unescapeHtml(text) {
    return text
        .replace(/&quot;/g, '"')
        .replace(/&#x27;|&#39;/g, "'")
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&amp;/g, '&');
}

function attr(tag, name) {
    const m = tag.match(new RegExp(`\\s${name}="([^"]*)"`, 'i'));
    return m ? unescapeHtml(m[1]) : null;
}

function parseForm(html) {
    const forms = [...html.matchAll(/<form\b[^>]*>[\s\S]*?<\/form>/gi)].map(m => m[0]);
    const posts = forms.filter(f => /method="post"/i.test(f));
    if (posts.length !== 1) return null;
    const form = posts[0];
    const fields = {};
    for (const [tag] of form.matchAll(/<input\b[^>]*>/gi)) {
        const name = attr(tag, 'name');
        if (name) fields[name] = attr(tag, 'value') ?? '';
    }
    const decisions = [...form.matchAll(/<button\b[^>]*>/gi)]
        .filter(([tag]) => attr(tag, 'name') === 'decision')
        .map(([tag]) => attr(tag, 'value'));
    return { action: attr(form.match(/<form\b[^>]*>/i)[0], 'action'), fields, decisions };
}

async function browse(authorizationUrl) {
    const steps = [];
    let url = new URL(authorizationUrl);
    let method = 'GET';
    let body;
    for (let i = 0; i < 10; i++) {
        const headers = { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
        if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
        const response = await fetch(url, { method, body, headers, redirect: 'manual' });
        steps.push(`${method} ${url.pathname} -> ${response.status}`);
        for (const line of response.headers.getSetCookie()) {
            const [pair] = line.split(';');
            const eq = pair.indexOf('=');
            cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
        }
        const location = response.headers.get('location');
        if (response.status >= 300 && response.status < 400 && location) {
            await response.body?.cancel();
            const target = new URL(location, url);
            if (target.origin !== ORIGIN) return { target, steps };
            url = target;
            method = 'GET';
            body = undefined;
            continue;
        }
        const html = await response.text();
        const form = response.status === 200 ? parseForm(html) : null;
        if (!form) throw new Error(`browser at ${steps.join(', ')}: ${html.slice(0, 500)}`);
        const fields = { ...form.fields };
        if ('password' in fields) {
            fields.username = args.username;
            fields.password = args.password;
        } else if (form.decisions.includes('allow')) {
            fields.decision = 'allow';
        } else {
            throw new Error(`browser at ${steps.join(', ')}: unknown form ${JSON.stringify(form)}`);
        }
        url = new URL(form.action || url.pathname, url);
        method = 'POST';
        body = new URLSearchParams(fields).toString();
    }
    throw new Error(`browser: no redirect back to the client after ${steps.join(', ')}`);
}

// -- the OAuthClientProvider: everything in memory ---------------------------------------------

class MemoryProvider {
    constructor(authMethod) {
        this.authMethod = authMethod;
        this.client = undefined;
        this.stored = undefined;
        this.verifier = undefined;
        this.sentState = undefined;
        this.code = undefined;
        this.stale = false; // hand out a stale access token until the next saveTokens()
        this.staleToken = undefined;
        this.saved = [];
        this.authorizations = [];
        this.invalidated = [];
    }

    get redirectUrl() {
        return REDIRECT_URL;
    }

    get clientMetadata() {
        return {
            client_name: `oauthd interop (TypeScript SDK, ${this.authMethod})`,
            redirect_uris: [REDIRECT_URL],
            grant_types: ['authorization_code', 'refresh_token'],
            response_types: ['code'],
            token_endpoint_auth_method: this.authMethod
        };
    }

    state() {
        this.sentState = randomBytes(16).toString('base64url');
        return this.sentState;
    }

    clientInformation() {
        return this.client;
    }

    saveClientInformation(info) {
        this.client = info;
    }

    tokens() {
        if (this.stored && this.stale) {
            // Same grant key, wrong secret: what a client holds after its token was rotated
            // or expired. oauthd must answer 401 so that the SDK refreshes.
            const key = this.stored.access_token.split('.')[0];
            this.staleToken ??= `${key}.${randomBytes(32).toString('base64url')}`;
            return { ...this.stored, access_token: this.staleToken };
        }
        return this.stored;
    }

    saveTokens(tokens) {
        this.stored = tokens;
        this.stale = false;
        this.saved.push({
            access: tokens.access_token,
            refresh: tokens.refresh_token,
            expires_in: tokens.expires_in,
            token_type: tokens.token_type,
            scope: tokens.scope
        });
    }

    async redirectToAuthorization(url) {
        const { target, steps } = await browse(url);
        const q = target.searchParams;
        this.authorizations.push({
            resource: url.searchParams.get('resource'),
            scope: url.searchParams.get('scope'),
            code_challenge_method: url.searchParams.get('code_challenge_method'),
            redirect: `${target.origin}${target.pathname}`,
            state_ok: q.get('state') === this.sentState,
            iss: q.get('iss'),
            error: q.get('error'),
            steps
        });
        this.code = q.get('code');
    }

    saveCodeVerifier(verifier) {
        this.verifier = verifier;
    }

    codeVerifier() {
        return this.verifier;
    }

    invalidateCredentials(scope) {
        this.invalidated.push(scope);
    }
}

// -- the flow ----------------------------------------------------------------------------------

function textOf(result) {
    if (result.isError) throw new Error(`tool error: ${JSON.stringify(result)}`);
    return result.content[0].text;
}

async function tokenRequest(provider, params) {
    const body = new URLSearchParams(params);
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    const { client_id, client_secret } = provider.client;
    if (provider.authMethod === 'client_secret_basic') {
        const basic = `${encodeURIComponent(client_id)}:${encodeURIComponent(client_secret)}`;
        headers.authorization = `Basic ${Buffer.from(basic).toString('base64')}`;
    } else {
        body.set('client_id', client_id);
        if (provider.authMethod === 'client_secret_post') body.set('client_secret', client_secret);
    }
    const response = await fetch(`${ORIGIN}/token`, { method: 'POST', headers, body });
    return { status: response.status, body: await response.json().catch(() => null) };
}

async function run() {
    const provider = new MemoryProvider(args['auth-method']);
    const client = new Client({ name: 'oauthd-interop-ts', version: '1.0.0' });
    const transportOptions = { authProvider: provider, fetch: recordingFetch };

    // 1. Unauthenticated: 401 -> discovery, DCR, browser; then the code exchange.
    let transport = new StreamableHTTPClientTransport(MCP_URL, transportOptions);
    let unauthorized = false;
    try {
        await client.connect(transport);
    } catch (error) {
        if (!(error instanceof UnauthorizedError)) throw error;
        unauthorized = true;
    }
    if (!unauthorized) throw new Error('connect() succeeded without a login');
    if (!provider.code) throw new Error(`no code: ${JSON.stringify(provider.authorizations)}`);
    await transport.finishAuth(provider.code);

    // 2. Logged in: a new transport, the MCP session.
    transport = new StreamableHTTPClientTransport(MCP_URL, transportOptions);
    await client.connect(transport);
    const sessionBefore = transport.sessionId;
    const server = client.getServerVersion();
    const protocolVersion = transport.protocolVersion;
    const tools = (await client.listTools()).tools.map(t => t.name).sort();
    const add = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } });
    const progress = [];
    const countdown = await client.callTool(
        { name: 'countdown', arguments: { n: 3, delay: 0.05 } },
        undefined,
        { onprogress: p => progress.push([p.progress, p.total]) }
    );
    const whoamiBefore = await client.callTool({ name: 'whoami', arguments: {} });

    // 3. Mid-session refresh: the next request carries a stale token -> 401 -> refresh.
    const refreshToken1 = provider.stored.refresh_token;
    const savedBefore = provider.saved.length;
    const mark = requests.length;
    provider.stale = true;
    const afterRefresh = await client.callTool({ name: 'add', arguments: { a: 40, b: 2 } });
    const whoamiAfter = await client.callTool({ name: 'whoami', arguments: {} });
    const sessionAfter = transport.sessionId;
    const refreshPhase = requests.slice(mark);

    if (args['save-state']) {
        const state = { client: provider.client, tokens: provider.stored };
        writeFileSync(args['save-state'], JSON.stringify(state));
    }

    // 4. Replay of the superseded refresh token (its successor is in use): 400 invalid_grant,
    //    and the grant is gone (the current access token stops working).
    const replay = args['save-state'] ? null : await tokenRequest(provider, {
        grant_type: 'refresh_token',
        refresh_token: refreshToken1
    });
    const probe = replay && await fetch(MCP_URL, {
        method: 'POST',
        headers: {
            authorization: `Bearer ${provider.stored.access_token}`,
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            'mcp-session-id': sessionAfter ?? '',
            'mcp-protocol-version': protocolVersion ?? ''
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'tools/list' })
    });
    await probe?.body?.cancel();

    await client.close().catch(() => {});
    return {
        ok: true,
        auth_method: provider.authMethod,
        client_id: provider.client.client_id,
        registered_auth_method: provider.client.token_endpoint_auth_method ?? null,
        registrations: requests.filter(r => r.path === '/register').map(r => r.status),
        has_client_secret: typeof provider.client.client_secret === 'string',
        server,
        protocol_version: protocolVersion,
        authorizations: provider.authorizations,
        invalidated: provider.invalidated,
        tokens_saved: provider.saved.map(({ access, refresh, ...rest }) => ({
            ...rest,
            has_refresh: typeof refresh === 'string'
        })),
        tools,
        add: textOf(add),
        add_structured: add.structuredContent ?? null,
        countdown: textOf(countdown),
        progress,
        whoami_before: whoamiBefore.structuredContent ?? null,
        whoami_after: whoamiAfter.structuredContent ?? null,
        after_refresh: textOf(afterRefresh),
        session_before: sessionBefore ?? null,
        session_after: sessionAfter ?? null,
        refresh: {
            saved: provider.saved.length - savedBefore,
            access_changed: provider.saved.at(-1).access !== provider.saved[savedBefore - 1].access,
            refresh_rotated: provider.stored.refresh_token !== refreshToken1,
            stale_token_used: refreshPhase.some(r => r.bearer === provider.staleToken),
            requests: refreshPhase.map(({ bearer, ...r }) => ({
                ...r,
                bearer: bearer === provider.staleToken ? 'stale' : bearer ? 'current' : null
            }))
        },
        replay: replay && { status: replay.status, error: replay.body?.error ?? null },
        after_replay_status: probe?.status ?? null,
        after_replay_www_authenticate: probe?.headers.get('www-authenticate') ?? null,
        token_grants: requests.filter(r => r.path === '/token').map(r => [r.grant_type, r.status]),
        mcp_statuses: requests
            .filter(r => r.path === MCP_URL.pathname)
            .map(r => [r.method, r.rpc ?? null, r.status])
    };
}

// -- machine clients: the SDK's client credentials providers ----------------------------------

function machineProvider() {
    const expectedIssuer = args.issuer;
    if (args['client-credentials']) {
        const provider = new ClientCredentialsProvider({
            clientId: args['client-credentials'],
            clientSecret: args['client-secret'],
            clientName: 'oauthd interop (TypeScript SDK, client credentials)',
            expectedIssuer
        });
        const method = args['secret-method'];
        if (method !== 'client_secret_basic') {
            provider.saveClientInformation({
                ...provider.clientInformation(),
                token_endpoint_auth_method: method
            });
        }
        return provider;
    }
    return new PrivateKeyJwtProvider({
        clientId: args['private-key-jwt'],
        privateKey: readFileSync(args['private-key-pem'], 'utf8'),
        algorithm: args.alg,
        clientName: 'oauthd interop (TypeScript SDK, private_key_jwt)',
        expectedIssuer
    });
}

async function machine() {
    const provider = machineProvider();
    const client = new Client({ name: 'oauthd-interop-ts', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(MCP_URL, {
        authProvider: provider,
        fetch: recordingFetch
    });
    await client.connect(transport);
    const tools = (await client.listTools()).tools.map(t => t.name).sort();
    const add = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } });
    const whoami = await client.callTool({ name: 'whoami', arguments: {} });
    await client.close().catch(() => {});
    const tokens = provider.tokens();
    return {
        ok: true,
        client_id: provider.clientInformation().client_id,
        server: client.getServerVersion(),
        tools,
        add: textOf(add),
        whoami: whoami.structuredContent ?? null,
        token: {
            token_type: tokens?.token_type ?? null,
            scope: tokens?.scope ?? null,
            has_refresh: typeof tokens?.refresh_token === 'string'
        },
        registrations: requests.filter(r => r.path === '/register').length,
        token_requests: requests
            .filter(r => r.path === '/token')
            .map(r => ({ grant_type: r.grant_type, client_auth: r.client_auth, status: r.status })),
        mcp_statuses: requests
            .filter(r => r.path === MCP_URL.pathname)
            .map(r => [r.method, r.rpc ?? null, r.status])
    };
}

// -- resuming with saved tokens: no login ------------------------------------------------------

async function resume() {
    const state = JSON.parse(readFileSync(args.resume, 'utf8'));
    const provider = new MemoryProvider(args['auth-method']);
    provider.client = state.client;
    provider.stored = state.tokens;
    const client = new Client({ name: 'oauthd-interop-ts', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(MCP_URL, {
        authProvider: provider,
        fetch: recordingFetch
    });
    await client.connect(transport);
    const tools = (await client.listTools()).tools.map(t => t.name).sort();
    const add = await client.callTool({ name: 'add', arguments: { a: 1, b: 1 } });
    provider.stale = true;
    const afterRefresh = await client.callTool({ name: 'add', arguments: { a: 2, b: 2 } });
    await client.close().catch(() => {});
    return {
        ok: true,
        server: client.getServerVersion(),
        authorizations: provider.authorizations,
        tools,
        add: textOf(add),
        after_refresh: textOf(afterRefresh),
        token_grants: requests.filter(r => r.path === '/token').map(r => [r.grant_type, r.status])
    };
}

const timer = setTimeout(() => {
    console.log(JSON.stringify({ ok: false, error: `timeout after ${args.timeout} s`, requests }));
    process.exit(1);
}, Number(args.timeout) * 1000);

try {
    const machineClient = args['client-credentials'] || args['private-key-jwt'];
    const result = await (machineClient ? machine() : args.resume ? resume() : run());
    console.log(JSON.stringify(result));
    clearTimeout(timer);
    process.exit(0);
} catch (error) {
    console.log(
        JSON.stringify({ ok: false, error: String(error?.stack ?? error), requests: requests.slice(-30) })
    );
    clearTimeout(timer);
    process.exit(1);
}
