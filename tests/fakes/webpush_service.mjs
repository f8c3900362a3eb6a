// A fake Web Push service for the tests: it checks what a real one
// checks and decrypts what only the subscriber could (it holds the
// subscription's private key), so a test sees the real protocol work.
//
//   node webpush_service.mjs PORT_FILE UA_PRIVATE UA_PUBLIC AUTH [LOG_FILE]
//
// Listens on 127.0.0.1 (a free port, written to PORT_FILE). Each POST must
// carry Content-Encoding: aes128gcm, a TTL, a valid Urgency if any, and
// Authorization: vapid t=JWT, k=KEY with an ES256 JWT that verifies with
// KEY, whose aud is this origin, whose exp is in the future and at most
// 24 h away, and whose sub is a mailto: or https: contact (RFC 8292). The
// body is decrypted as RFC 8291 says. Answers: /push/gone 410,
// /push/busy 429 with Retry-After: 7, /push/busy-once/... 429 with
// Retry-After: 2 the first time and 201 after, /push/hang never,
// /push/broken 500 every time,
// /push/odd a 302 to elsewhere (not followed: not a push service's answer), else
// 201 with the plaintext as the body; 400 with the reason when a check
// fails. With LOG_FILE, one JSON line per request there: {"path",
// "status","reason","ttl","urgency","topic","payload","at"}.
import { createServer } from 'node:http';
import { createECDH, createHmac, createDecipheriv, createPublicKey, verify } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';

const [portFile, uaPrivate, uaPublic, auth, logFile] = process.argv.slice(2);
const seenOnce = new Set();
function record(req, status, reason, plain) {
	if (!logFile) return;
	let payload = null;
	try { payload = plain ? JSON.parse(plain.toString()) : null; } catch (e) { payload = plain.toString(); }
	appendFileSync(logFile, JSON.stringify({ path: req.url, status, reason, ttl: req.headers.ttl,
		urgency: req.headers.urgency, topic: req.headers.topic, payload, at: Date.now() }) + '\n');
}
const b64 = (s) => Buffer.from(s, 'base64url');
const hmac = (key, ...parts) => createHmac('sha256', key).update(Buffer.concat(parts)).digest();

function checkVapid(header, origin) {
	const m = /^vapid t=([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+), k=([A-Za-z0-9_-]+)$/.exec(header || '');
	if (!m) throw new Error('no vapid authorization');
	const point = b64(m[4]);
	if (point.length !== 65 || point[0] !== 4) throw new Error('k is not an uncompressed P-256 point');
	const key = createPublicKey({
		key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'),
		       y: point.subarray(33).toString('base64url') },
		format: 'jwk',
	});
	const head = JSON.parse(b64(m[1]).toString());
	if (head.alg !== 'ES256') throw new Error('alg is not ES256');
	const ok = verify('sha256', Buffer.from(`${m[1]}.${m[2]}`), { key, dsaEncoding: 'ieee-p1363' }, b64(m[3]));
	if (!ok) throw new Error('the JWT signature does not verify');
	const claims = JSON.parse(b64(m[2]).toString());
	const now = Math.floor(Date.now() / 1000);
	if (claims.aud !== origin) throw new Error(`aud ${claims.aud} is not ${origin}`);
	if (!(claims.exp > now && claims.exp <= now + 86400)) throw new Error('exp is not within 24 h');
	if (!/^(mailto:|https:)/.test(claims.sub || '')) throw new Error('sub is not a contact');
}

function decrypt(body) {
	if (body.length < 86 + 17) throw new Error('too short');
	const salt = body.subarray(0, 16), rs = body.readUInt32BE(16), idlen = body[20];
	if (rs !== 4096 || idlen !== 65) throw new Error('not one aes128gcm record with a P-256 key id');
	const asPublic = body.subarray(21, 86), record = body.subarray(86);
	const ecdh = createECDH('prime256v1');
	ecdh.setPrivateKey(b64(uaPrivate));
	const secret = ecdh.computeSecret(asPublic);
	const prkKey = hmac(b64(auth), secret);
	const ikm = hmac(prkKey, Buffer.from('WebPush: info\0'), b64(uaPublic), asPublic, Buffer.from([1]));
	const prk = hmac(salt, ikm);
	const cek = hmac(prk, Buffer.from('Content-Encoding: aes128gcm\0'), Buffer.from([1])).subarray(0, 16);
	const nonce = hmac(prk, Buffer.from('Content-Encoding: nonce\0'), Buffer.from([1])).subarray(0, 12);
	const d = createDecipheriv('aes-128-gcm', cek, nonce);
	d.setAuthTag(record.subarray(record.length - 16));
	let plain = Buffer.concat([d.update(record.subarray(0, record.length - 16)), d.final()]);
	let end = plain.length - 1;
	while (end >= 0 && plain[end] === 0) end--; // padding
	if (end < 0 || plain[end] !== 2) throw new Error('no last-record delimiter');
	return plain.subarray(0, end);
}

const server = createServer((req, res) => {
	const chunks = [];
	req.on('data', (c) => chunks.push(c));
	req.on('end', () => {
		const origin = `http://${req.headers.host}`;
		try {
			if (req.method !== 'POST') throw new Error('not a POST');
			if (req.headers['content-encoding'] !== 'aes128gcm') throw new Error('not aes128gcm');
			if (!/^\d+$/.test(req.headers.ttl || '')) throw new Error('no TTL');
			if (req.headers.urgency && !['very-low', 'low', 'normal', 'high'].includes(req.headers.urgency))
				throw new Error('a bad Urgency');
			checkVapid(req.headers.authorization, origin);
			if (req.headers.topic && !/^[A-Za-z0-9_-]{1,32}$/.test(req.headers.topic)) throw new Error('a bad Topic');
			const plain = decrypt(Buffer.concat(chunks));
			if (req.url === '/push/gone') { record(req, 410, 'gone', plain); res.writeHead(410); res.end('gone'); return; }
			if (req.url === '/push/busy') { record(req, 429, 'busy', plain); res.writeHead(429, { 'Retry-After': '7' }); res.end('slow down'); return; }
			if (req.url.startsWith('/push/busy-once/') && !seenOnce.has(req.url)) {
				seenOnce.add(req.url);
				record(req, 429, 'busy', plain);
				res.writeHead(429, { 'Retry-After': '2' });
				res.end('slow down');
				return;
			}
			if (req.url.startsWith('/push/hang')) { record(req, 0, 'hung', plain); return; }
			if (req.url.startsWith('/push/broken')) {
				record(req, 500, 'broken', plain);
				res.writeHead(500);
				res.end('internal error');
				return;
			}
			if (req.url.startsWith('/push/odd')) {
				record(req, 302, 'redirect', plain);
				res.writeHead(302, { Location: 'http://127.0.0.1:1/elsewhere', 'Content-Type': 'text/html' });
				res.end('<a href="http://127.0.0.1:1/elsewhere">moved</a>');
				return;
			}
			record(req, 201, '', plain);
			res.writeHead(201, { 'Content-Type': 'text/plain' });
			res.end(plain);
		} catch (e) {
			record(req, 400, String(e.message), null);
			res.writeHead(400, { 'Content-Type': 'text/plain' });
			res.end(String(e.message));
		}
	});
});
server.listen(0, '127.0.0.1', () => writeFileSync(portFile, String(server.address().port)));
process.on('SIGTERM', () => process.exit(0)); // hung requests would hold close() up
