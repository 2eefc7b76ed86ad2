// Smoke test of Imagegate's /v1 API with the official OpenAI Node SDK (the `openai` package from npm).
//
//   IMAGEGATE_BASE_URL=http://127.0.0.1:8000/v1 IMAGEGATE_API_KEY=ig_... node smoke.mjs
//
// Prints one line per check and exits non-zero if any fails. tests/test_node_sdk.py runs it against a live server.
import { deflateSync } from 'node:zlib';
import OpenAI, { toFile } from 'openai';

const baseURL = process.env.IMAGEGATE_BASE_URL;
const apiKey = process.env.IMAGEGATE_API_KEY;
if (!baseURL || !apiKey) {
  console.error('Set IMAGEGATE_BASE_URL (e.g. http://127.0.0.1:8000/v1) and IMAGEGATE_API_KEY.');
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const MODEL = 'local-preview';
const PNG_MAGIC = '89504e470d0a1a0a';

let failures = 0;

async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok    ${name}${detail ? ` (${detail})` : ''}`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL  ${name}: ${err && err.stack ? err.stack : err}`);
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

function isPng(bytes) {
  return Buffer.from(bytes).subarray(0, 8).toString('hex') === PNG_MAGIC;
}

// A small opaque PNG (RGBA), written with node:zlib only.
function png(width, height, [r, g, b, a]) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc32 = (buf) => {
    let c = 0xffffffff;
    for (const byte of buf) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA, no interlace
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array(width).fill([r, g, b, a]).flat())]);
  const pixels = Buffer.concat(Array(height).fill(row));
  return Buffer.concat([
    Buffer.from(PNG_MAGIC, 'hex'),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(pixels)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

await check('images.generate b64_json', async () => {
  const result = await client.images.generate({
    model: MODEL, prompt: 'A lighthouse in a storm', size: '256x256', response_format: 'b64_json', n: 2,
  });
  expect(result.data.length === 2, `expected 2 images, got ${result.data.length}`);
  for (const item of result.data) {
    expect(isPng(Buffer.from(item.b64_json, 'base64')), 'b64_json is not a PNG');
    expect(item.revised_prompt === 'A lighthouse in a storm', `revised_prompt ${item.revised_prompt}`);
  }
  expect(typeof result.created === 'number', 'created is not a number');
  const usage = result.usage; // Imagegate's extension, kept by the SDK
  expect(usage && usage.model_used === MODEL && usage.image_size === '256x256' && usage.cost > 0,
    `usage ${JSON.stringify(usage)}`);
  return `usage ${JSON.stringify(usage)}`;
});

await check('images.generate url (and the URL serves the PNG)', async () => {
  const result = await client.images.generate({ model: MODEL, prompt: 'A red bicycle', size: '512x512' });
  const url = result.data[0].url;
  expect(typeof url === 'string' && url.startsWith('http'), `url ${url}`);
  const response = await fetch(url);
  expect(response.status === 200, `GET image URL answered ${response.status}`);
  expect(response.headers.get('content-type') === 'image/png', `content-type ${response.headers.get('content-type')}`);
  expect(isPng(await response.arrayBuffer()), 'the image URL does not serve a PNG');
  return url.split('?')[0].slice(0, 60) + '…';
});

await check('images.edit (multipart, image + mask)', async () => {
  const result = await client.images.edit({
    model: MODEL,
    image: await toFile(png(64, 64, [200, 40, 40, 255]), 'in.png', { type: 'image/png' }),
    mask: await toFile(png(64, 64, [0, 0, 0, 0]), 'mask.png', { type: 'image/png' }),
    prompt: 'Add a sun',
    size: '256x256',
    response_format: 'b64_json',
  });
  expect(result.data.length === 1 && isPng(Buffer.from(result.data[0].b64_json, 'base64')), 'no PNG back');
  return `${result.usage.image_size}, cost ${result.usage.cost}`;
});

await check('images.createVariation (multipart)', async () => {
  const result = await client.images.createVariation({
    model: MODEL, image: await toFile(png(32, 32, [10, 120, 200, 255]), 'in.png', { type: 'image/png' }),
    n: 2, size: '256x256', response_format: 'b64_json',
  });
  expect(result.data.length === 2, `expected 2 variations, got ${result.data.length}`);
  return `${result.data.length} variations`;
});

await check('models.list', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  expect(ids.includes(MODEL), `${MODEL} not listed: ${ids.join(', ')}`);
  return ids.join(', ');
});

await check(`models.retrieve(${MODEL})`, async () => {
  const model = await client.models.retrieve(MODEL);
  expect(model.id === MODEL && model.object === 'model', JSON.stringify(model));
  expect(Array.isArray(model.sizes) && model.sizes.includes('256x256'), `sizes ${model.sizes}`);
  return `owned_by ${model.owned_by}`;
});

await check('unknown model -> NotFoundError 404 model_not_found', async () => {
  try {
    await client.images.generate({ model: 'no-such-model', prompt: 'x' });
  } catch (err) {
    expect(err instanceof OpenAI.NotFoundError, `expected NotFoundError, got ${err && err.constructor.name}`);
    expect(err.status === 404, `status ${err.status}`);
    expect(err.code === 'model_not_found', `code ${err.code}`);
    expect(err.param === 'model', `param ${err.param}`);
    expect(typeof err.requestID === 'string' && err.requestID.startsWith('req_'), `requestID ${err.requestID}`);
    return `${err.status} ${err.code}, ${err.requestID}`;
  }
  throw new Error('no error was raised');
});

await check('bad size -> BadRequestError 400 invalid_size', async () => {
  try {
    await client.images.generate({ model: MODEL, prompt: 'x', size: '640x480' });
  } catch (err) {
    expect(err instanceof OpenAI.BadRequestError, `expected BadRequestError, got ${err && err.constructor.name}`);
    expect(err.code === 'invalid_size' && err.param === 'size', `code ${err.code}, param ${err.param}`);
    return err.message.slice(0, 80) + '…';
  }
  throw new Error('no error was raised');
});

await check('wrong key -> AuthenticationError 401 invalid_api_key', async () => {
  const stranger = new OpenAI({ baseURL, apiKey: 'ig_AAAAAAAA_' + 'x'.repeat(43), maxRetries: 0 });
  try {
    await stranger.models.list();
  } catch (err) {
    expect(err instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${err && err.constructor.name}`);
    expect(err.status === 401 && err.code === 'invalid_api_key', `status ${err.status}, code ${err.code}`);
    return `${err.status} ${err.code}`;
  }
  throw new Error('no error was raised');
});

console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
