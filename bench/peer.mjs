// The peer for `make bench`: node-oidc-provider issuing ES256 JWT access tokens (RFC 9068
// profile) for client_credentials with client_secret_basic, one static client, on loopback.
//
//   node peer.mjs PORT [FAPI_CLIENT_PUBLIC_JWK_JSON]
//
// With a public ES256 JWK, a second client `bench-fapi` authenticates with private_key_jwt
// (ES256) and gets DPoP-bound tokens (`dpop_bound_access_tokens`; DPoP is on by default in
// oidc-provider 9): the FAPI path of the bench.
//
// Two settings its JWT access tokens need: `resourceIndicators` enabled with a default resource,
// and that resource's `accessTokenFormat: 'jwt'` (without them oidc-provider issues opaque
// tokens for client_credentials, or none at all).
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 3000);
const issuer = `http://127.0.0.1:${port}`;
const resource = 'https://api.example.com';

const fapiJwk = process.argv[3] ? JSON.parse(process.argv[3]) : null;

const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
jwk.kid = 'peer-es256';
jwk.alg = 'ES256';
jwk.use = 'sig';

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'bench-client',
    client_secret: 'bench-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write',
    id_token_signed_response_alg: 'ES256', // the only key is ES256 (the default is RS256)
  }, ...(fapiJwk ? [{
    client_id: 'bench-fapi',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: { keys: [fapiJwk] },
    dpop_bound_access_tokens: true,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write',
    id_token_signed_response_alg: 'ES256',
  }] : [])],
  jwks: { keys: [jwk] },
  scopes: ['read', 'write'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'read write',
        audience: resource,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  cookies: { keys: ['bench-cookie-key-not-secret'] },
});

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`peer: oidc-provider listening on ${issuer}`);
});
server.keepAliveTimeout = 300_000;
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
