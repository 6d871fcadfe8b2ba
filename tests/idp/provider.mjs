// A real OpenID Connect provider (panva's oidc-provider) for oauthd's upstream-login tests.
//
//   node provider.mjs [--port N] [--config JSON] [--exit-with-stdin]
//
// Listens on 127.0.0.1 only, plain HTTP, issuer http://127.0.0.1:<port>. --port 0 (the
// default) lets the OS pick a free port; the issuer is fixed once the socket is bound. The
// config JSON (--config, else env IDP_CONFIG; env IDP_PORT is the port fallback) is:
//
//   {
//     "client": {"client_id": "...", "client_secret": "...", "redirect_uris": ["..."],
//                ...any other client metadata, e.g. "token_endpoint_auth_method"},
//     "accounts": [{"username": "alice", "password": "...", "sub": "...",
//                   "email": "...", "email_verified": true, "name": "..."}],
//     "ttl": {"AccessToken": 3600, ...}   // optional, seconds, merged over the defaults
//   }
//
// When listening it prints exactly one line `READY <issuer>` on stdout (anything the
// library prints goes to stderr). SIGTERM/SIGINT stop it with exit code 0; with
// --exit-with-stdin it also stops when its stdin closes (its parent is gone).
//
// The login page is a plain HTML form (POST `login` + `password`); consent is automatic
// (every requested scope and claim is granted), so a test can play the browser with
// form posts. Authorization code flow only, PKCE S256 required for every client, refresh
// tokens issued on every code exchange and rotated on every use, id_token RS256 with a key
// generated at start, and the account's claims (email, profile) in the id_token too.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

// oidc-provider prints its notices with console.info (stdout): keep stdout for READY.
console.info = console.error;
console.log = console.error;

const HOST = '127.0.0.1';

const DEFAULT_ACCOUNTS = [
  {
    username: 'alice',
    password: 'alice-password',
    sub: 'user-1001',
    email: 'alice@example.test',
    email_verified: true,
    name: 'Alice Liddell',
  },
  {
    username: 'bob',
    password: 'bob-password',
    sub: 'user-1002',
    email: 'bob@example.test',
    email_verified: true,
    name: 'Bob Builder',
  },
  {
    username: 'mallory',
    password: 'mallory-password',
    sub: 'user-1003',
    email: 'mallory@example.test',
    email_verified: false,
    name: 'Mallory',
  },
];

const DEFAULT_TTL = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  IdToken: 3600,
  RefreshToken: 14 * 24 * 3600,
  Interaction: 600,
  Session: 14 * 24 * 3600,
  Grant: 14 * 24 * 3600,
};

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function readOptions() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      config: { type: 'string' },
      'exit-with-stdin': { type: 'boolean', default: false },
    },
  });
  const portText = values.port ?? process.env.IDP_PORT ?? '0';
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${portText}`);
  let config;
  try {
    config = JSON.parse(values.config ?? process.env.IDP_CONFIG ?? '{}');
  } catch (err) {
    fail(`config is not JSON: ${err.message}`);
  }
  const client = config.client ?? {};
  for (const key of ['client_id', 'client_secret']) {
    if (typeof client[key] !== 'string' || !client[key]) fail(`client.${key} is required`);
  }
  if (!Array.isArray(client.redirect_uris) || !client.redirect_uris.length) {
    fail('client.redirect_uris must be a non-empty array');
  }
  const accounts = config.accounts ?? DEFAULT_ACCOUNTS;
  for (const a of accounts) {
    if (typeof a.username !== 'string' || typeof a.password !== 'string') {
      fail('every account needs a username and a password');
    }
  }
  return {
    port,
    exitWithStdin: values['exit-with-stdin'],
    client: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...client,
    },
    accounts,
    ttl: { ...DEFAULT_TTL, ...(config.ttl ?? {}) },
  };
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
}

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${esc(title)} - test IdP</title></head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(uid, clientId, login, error) {
  const alert = error ? `<p class="error" role="alert">${esc(error)}</p>\n` : '';
  return page(
    'Sign in',
    `<p>to continue to <strong>${esc(clientId)}</strong></p>
${alert}<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label>Username <input name="login" value="${esc(login)}" required autofocus></label>
<label>Password <input type="password" name="password" required></label>
<button type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort">
<button type="submit">Cancel</button>
</form>`,
  );
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grant everything the consent prompt says is missing (what devInteractions' consent does).
async function autoConsent(provider, details) {
  const { prompt, grantId, session, params } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

function interactions(provider, accounts) {
  const byLogin = new Map();
  for (const a of accounts) {
    byLogin.set(a.username, a);
    if (a.email) byLogin.set(a.email, a);
  }

  return async function interactionRoutes(ctx, next) {
    const match = /^\/interaction\/([^/]+)(?:\/(login|abort))?$/.exec(ctx.path);
    if (!match) return next();
    const [, uid, action] = match;
    ctx.set('Cache-Control', 'no-store');
    try {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.uid !== uid) ctx.throw(400, 'interaction does not match its cookie');
      const clientId = details.params.client_id;

      if (!action && ctx.method === 'GET') {
        if (details.prompt.name === 'login') {
          ctx.type = 'html';
          ctx.body = loginPage(uid, clientId, details.params.login_hint ?? '', '');
          return undefined;
        }
        if (details.prompt.name === 'consent') {
          const grantId = await autoConsent(provider, details);
          await provider.interactionFinished(
            ctx.req,
            ctx.res,
            { consent: { grantId } },
            { mergeWithLastSubmission: true },
          );
          return undefined;
        }
        ctx.throw(501, `prompt ${details.prompt.name} is not implemented`);
      }

      if (action === 'login' && ctx.method === 'POST') {
        if (details.prompt.name !== 'login') ctx.throw(400, 'this interaction is not a login');
        const form = await readForm(ctx.req);
        const login = form.get('login') ?? '';
        const account = byLogin.get(login);
        if (!account || account.password !== (form.get('password') ?? '')) {
          ctx.status = 401;
          ctx.type = 'html';
          ctx.body = loginPage(uid, clientId, login, 'Invalid username or password.');
          return undefined;
        }
        await provider.interactionFinished(
          ctx.req,
          ctx.res,
          { login: { accountId: account.sub, amr: ['pwd'] } },
          { mergeWithLastSubmission: false },
        );
        return undefined;
      }

      if (action === 'abort' && ctx.method === 'POST') {
        await provider.interactionFinished(
          ctx.req,
          ctx.res,
          { error: 'access_denied', error_description: 'End-User aborted interaction' },
          { mergeWithLastSubmission: false },
        );
        return undefined;
      }

      ctx.throw(405, `${ctx.method} ${ctx.path} is not allowed`);
    } catch (err) {
      if (ctx.res.headersSent) throw err;
      ctx.status = err.status ?? err.statusCode ?? 500;
      ctx.type = 'html';
      const message = err.error_description ?? err.message;
      ctx.body = page('Error', `<p class="error" role="alert">${esc(err.name)}: ${esc(message)}</p>`);
    }
    return undefined;
  };
}

function makeProvider(issuer, options) {
  const bySub = new Map(options.accounts.map((a) => [a.sub ?? a.username, a]));
  const provider = new Provider(issuer, {
    clients: [options.client],
    jwks: { keys: [signingKey()] },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    // Code flow: put the scopes' claims in the id_token too, not only at userinfo.
    conformIdTokenClaims: false,
    async findAccount(_ctx, sub) {
      const account = bySub.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified,
            name: account.name,
            preferred_username: account.username,
          };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { methods: ['S256'], required: () => true },
    // A refresh token on every code exchange (not only with offline_access + prompt=consent,
    // the OIDC rule), and a new one on every refresh: reusing a rotated one is refused.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    ttl: options.ttl,
    async renderError(ctx, out) {
      ctx.type = 'html';
      const lines = Object.entries(out).map(
        ([key, value]) => `<p class="error" role="alert">${esc(key)}: ${esc(value)}</p>`,
      );
      ctx.body = page('Error', lines.join('\n'));
    },
  });
  provider.use(interactions(provider, options.accounts));
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

function main() {
  const options = readOptions();
  let handler = (_req, res) => {
    res.statusCode = 503;
    res.end('starting\n');
  };
  const server = http.createServer((req, res) => handler(req, res));
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (options.exitWithStdin) {
    process.stdin.on('end', stop);
    process.stdin.on('error', stop);
    process.stdin.resume();
  }
  server.on('error', (err) => fail(`cannot listen on ${HOST}:${options.port}: ${err.message}`));
  server.listen(options.port, HOST, () => {
    const { port } = server.address();
    const issuer = `http://${HOST}:${port}`;
    handler = makeProvider(issuer, options).callback();
    process.stdout.write(`READY ${issuer}\n`);
  });
}

main();
