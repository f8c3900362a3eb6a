// Fake APNs and FCM for the tests: one HTTP/2 server (cleartext, prior
// knowledge, as curl speaks to an http:// base URL) that checks what the
// real services check and records what it accepted, so a test sees the
// real protocols work.
//
//   node push_providers.mjs DIR APNS_PUBLIC_PEM KEY_ID TEAM_ID FCM_PUBLIC_PEM CLIENT_EMAIL
//
// Writes its port to DIR/port and one JSON line per request it answered
// to DIR/pushes.jsonl: {"provider","token","status","reason","headers",
// "payload","at"}.
//
// APNs (POST /3/device/TOKEN): `authorization: bearer JWT`, an ES256 JWT
// whose header names KEY_ID and whose claims name TEAM_ID as iss, issued
// within the hour, that verifies with APNS_PUBLIC_PEM (else 403
// InvalidProviderToken / ExpiredProviderToken); apns-topic present;
// apns-push-type alert or background, background only at priority 5;
// apns-priority 5 or 10; apns-collapse-id at most 64 bytes; a JSON
// payload of at most 4096 bytes with an "aps" object (else 400 with the
// reason APNs gives).
//
// FCM: POST /token takes the OAuth2 JWT grant (RFC 7523): an RS256 JWT
// verifying with FCM_PUBLIC_PEM, iss CLIENT_EMAIL, the messaging scope,
// aud this token endpoint, exp at most an hour after iat; answers an
// access token. POST /v1/projects/P/messages:send wants `Authorization:
// Bearer` with a token it issued (401 UNAUTHENTICATED otherwise) and a
// message with a token, string data values and a valid android priority.
//
// Behaviour by device or registration token's start: "dead" gone (APNs
// 410 Unregistered, FCM 404 UNREGISTERED); "bad0" APNs 400
// BadDeviceToken; "0429" 429 the first time (FCM with Retry-After: 2),
// accepted after; "0ff0" never answered; "0dd0" 400 with an HTML page
// instead of the provider's JSON (a proxy in the way); "0500" 500 every
// time (APNs InternalServerError, FCM INTERNAL); anything else accepted.
import { createServer } from 'node:http2';
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';

const [dir, apnsPem, keyId, teamId, fcmPem, clientEmail] = process.argv.slice(2);
const apnsKey = createPublicKey(readFileSync(apnsPem));
const fcmKey = createPublicKey(readFileSync(fcmPem));
const issued = new Set();
const seenOnce = new Set();
const b64 = (s) => Buffer.from(s, 'base64url');

function jwtParts(token, alg, key) {
	const m = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(token || '');
	if (!m) throw new Error('not a compact JWT');
	const head = JSON.parse(b64(m[1]).toString());
	if (head.alg !== alg) throw new Error(`alg ${head.alg} is not ${alg}`);
	const opts = alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key;
	if (!verify('sha256', Buffer.from(`${m[1]}.${m[2]}`), opts, b64(m[3])))
		throw new Error('the JWT signature does not verify');
	return { head, claims: JSON.parse(b64(m[2]).toString()) };
}

function record(entry) {
	appendFileSync(`${dir}/pushes.jsonl`, JSON.stringify({ ...entry, at: Date.now() }) + '\n');
}

function answer(stream, status, body, headers = {}) {
	stream.respond({ ':status': status, 'content-type': 'application/json', ...headers });
	stream.end(body === undefined ? '' : JSON.stringify(body));
}

function apns(stream, h, token, payloadText) {
	const entry = { provider: 'apns', token, headers: {
		topic: h['apns-topic'], push_type: h['apns-push-type'], priority: h['apns-priority'],
		collapse_id: h['apns-collapse-id'], expiration: h['apns-expiration'] } };
	const refuse = (status, reason) => {
		record({ ...entry, status, reason });
		answer(stream, status, { reason });
	};
	const auth = /^bearer (.+)$/.exec(h.authorization || '');
	if (!auth) return refuse(403, 'MissingProviderToken');
	let jwt;
	try { jwt = jwtParts(auth[1], 'ES256', apnsKey); } catch (e) { return refuse(403, 'InvalidProviderToken'); }
	const now = Math.floor(Date.now() / 1000);
	if (jwt.head.kid !== keyId || jwt.claims.iss !== teamId) return refuse(403, 'InvalidProviderToken');
	if (!(jwt.claims.iat <= now + 60 && jwt.claims.iat > now - 3600)) return refuse(403, 'ExpiredProviderToken');
	if (!/^[0-9a-f]{64,200}$/.test(token)) return refuse(400, 'BadDeviceToken');
	if (!h['apns-topic']) return refuse(400, 'MissingTopic');
	const type = h['apns-push-type'], prio = h['apns-priority'];
	if (!['alert', 'background'].includes(type)) return refuse(400, 'InvalidPushType');
	if (!['5', '10'].includes(prio) || (type === 'background' && prio !== '5')) return refuse(400, 'BadPriority');
	if (h['apns-collapse-id'] && Buffer.byteLength(h['apns-collapse-id']) > 64) return refuse(400, 'BadCollapseId');
	if (h['apns-expiration'] && !/^\d+$/.test(h['apns-expiration'])) return refuse(400, 'BadExpirationDate');
	if (Buffer.byteLength(payloadText) > 4096) return refuse(413, 'PayloadTooLarge');
	let payload;
	try { payload = JSON.parse(payloadText); } catch (e) { return refuse(400, 'PayloadEmpty'); }
	if (typeof payload.aps !== 'object') return refuse(400, 'PayloadEmpty');
	entry.payload = payload;
	if (token.startsWith('dead')) return refuse(410, 'Unregistered');
	if (token.startsWith('bad0')) return refuse(400, 'BadDeviceToken');
	if (token.startsWith('0429') && !seenOnce.has(token)) { seenOnce.add(token); return refuse(429, 'TooManyRequests'); }
	if (token.startsWith('0ff0')) { record({ ...entry, status: 0, reason: 'hung' }); return; }
	if (token.startsWith('0dd0')) return oddAnswer(stream, entry);
	if (token.startsWith('0500')) return refuse(500, 'InternalServerError');
	record({ ...entry, status: 200 });
	stream.respond({ ':status': 200, 'apns-id': randomBytes(16).toString('hex') });
	stream.end();
}

// What a misconfigured proxy says in the provider's place.
function oddAnswer(stream, entry) {
	record({ ...entry, status: 400, reason: 'html' });
	stream.respond({ ':status': 400, 'content-type': 'text/html' });
	stream.end('<html><body><h1>400 Bad Request</h1>\u0000\u00ff</body></html>');
}

function fcmToken(stream, h, bodyText) {
	const refuse = (status, error) => {
		record({ provider: 'fcm-token', status, reason: error });
		answer(stream, status, { error, error_description: error });
	};
	const form = new URLSearchParams(bodyText);
	if (!/^application\/x-www-form-urlencoded/.test(h['content-type'] || '')) return refuse(400, 'invalid_request');
	if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return refuse(400, 'unsupported_grant_type');
	let jwt;
	try { jwt = jwtParts(form.get('assertion'), 'RS256', fcmKey); } catch (e) { return refuse(400, 'invalid_grant'); }
	const c = jwt.claims, now = Math.floor(Date.now() / 1000);
	const aud = `http://${h[':authority']}/token`;
	if (c.iss !== clientEmail || c.aud !== aud || !String(c.scope).split(' ').includes(
		'https://www.googleapis.com/auth/firebase.messaging') || !(c.iat <= now + 60) || !(c.exp > now) ||
		c.exp - c.iat > 3600) return refuse(400, 'invalid_grant');
	const token = 'ya29.' + randomBytes(24).toString('base64url');
	issued.add(token);
	record({ provider: 'fcm-token', status: 200 });
	answer(stream, 200, { access_token: token, expires_in: 3599, token_type: 'Bearer' });
}

function fcmError(status, code, errorCode) {
	const e = { error: { code: status, message: code, status: code } };
	if (errorCode) e.error.details = [{ '@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode }];
	return e;
}

function fcmSend(stream, h, project, bodyText) {
	const entry = { provider: 'fcm', project };
	const refuse = (status, code, errorCode, headers) => {
		record({ ...entry, status, reason: errorCode || code });
		answer(stream, status, fcmError(status, code, errorCode), headers);
	};
	const auth = /^Bearer (.+)$/.exec(h.authorization || '');
	if (!auth || !issued.has(auth[1])) return refuse(401, 'UNAUTHENTICATED');
	let body;
	try { body = JSON.parse(bodyText); } catch (e) { return refuse(400, 'INVALID_ARGUMENT'); }
	const m = body.message;
	if (!m || typeof m.token !== 'string') return refuse(400, 'INVALID_ARGUMENT');
	entry.token = m.token;
	entry.payload = m;
	if (m.data && Object.values(m.data).some((v) => typeof v !== 'string')) return refuse(400, 'INVALID_ARGUMENT');
	if (m.android && m.android.priority && !['NORMAL', 'HIGH'].includes(m.android.priority))
		return refuse(400, 'INVALID_ARGUMENT');
	if (m.token.startsWith('dead')) return refuse(404, 'NOT_FOUND', 'UNREGISTERED');
	if (m.token.startsWith('0429') && !seenOnce.has(m.token)) {
		seenOnce.add(m.token);
		return refuse(429, 'RESOURCE_EXHAUSTED', 'QUOTA_EXCEEDED', { 'retry-after': '2' });
	}
	if (m.token.startsWith('0ff0')) { record({ ...entry, status: 0, reason: 'hung' }); return; }
	if (m.token.startsWith('0dd0')) return oddAnswer(stream, entry);
	if (m.token.startsWith('0500')) return refuse(500, 'INTERNAL');
	record({ ...entry, status: 200 });
	answer(stream, 200, { name: `projects/${project}/messages/${randomBytes(8).toString('hex')}` });
}

const server = createServer();
server.on('stream', (stream, h) => {
	const chunks = [];
	stream.on('data', (c) => chunks.push(c));
	stream.on('error', () => {});
	stream.on('end', () => {
		const body = Buffer.concat(chunks).toString();
		const path = h[':path'];
		let m;
		if (h[':method'] !== 'POST') return answer(stream, 405, { reason: 'MethodNotAllowed' });
		if ((m = /^\/3\/device\/([^/?]+)$/.exec(path))) return apns(stream, h, m[1], body);
		if (path === '/token') return fcmToken(stream, h, body);
		if ((m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(path))) return fcmSend(stream, h, m[1], body);
		answer(stream, 404, { reason: 'BadPath' });
	});
});
server.listen(0, '127.0.0.1', () => writeFileSync(`${dir}/port`, String(server.address().port)));
process.on('SIGTERM', () => process.exit(0));
