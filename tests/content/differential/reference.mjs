// Reference side of the content store's differential test.
//
// Runs the independent JavaScript UnixFS implementation (ipfs-unixfs-importer
// with Kubo's `unixfs-v0-2015` profile, ipfs-unixfs-exporter, @ipld/car) on
// jobs read as one JSON array from stdin, and prints one JSON object per job
// on stdout, in order. The test data is generated here, independently of the
// Python side: Kubo's deterministic stream (ChaCha20 keystream, key =
// SHA-256(seed), zero nonce and counter) or zeros.
//
// Jobs:
//   {"op": "cid", "kind": "chacha"|"zeros", "seed": str, "size": int,
//    "cidVersion": 0|1, "chunkSize"?: int, "maxLinks"?: int}
//      -> {"cid": str}
//   {"op": "car", ... same as cid ..., "out": path}
//      -> {"cid": str}   (and a CARv1 of the file's DAG written by @ipld/car)
//   {"op": "readcar", "path": path}
//      -> {"roots": [str], "blocks": int, "size": int, "sha256": hex}
//         (every block's hash checked, the file read back by the JS exporter)
import { createCipheriv, createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CarReader, CarWriter } from '@ipld/car'
import { decode } from '@ipld/dag-pb'
import { exporter } from 'ipfs-unixfs-exporter'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { sha256 } from 'multiformats/hashes/sha2'

const PIECE = 1 << 20
const ZEROS = new Uint8Array(PIECE)

async function * generate (job) {
  let remaining = job.size
  const cipher = job.kind === 'chacha'
    ? createCipheriv('chacha20', createHash('sha256').update(job.seed, 'utf8').digest(), Buffer.alloc(16))
    : null
  while (remaining > 0) {
    const step = Math.min(remaining, PIECE)
    yield cipher === null ? ZEROS.subarray(0, step) : cipher.update(ZEROS.subarray(0, step))
    remaining -= step
  }
}

// A blockstore that keeps nothing (CIDs only) or everything (for CAR jobs).
class SinkBlockstore {
  constructor (keep) { this.keep = keep; this.blocks = new Map() }
  async put (cid, bytes) { if (this.keep) this.blocks.set(cid.toString(), { cid, bytes }); return cid }
  async has (cid) { return this.blocks.has(cid.toString()) }
  async * get (cid) {
    const entry = this.blocks.get(cid.toString())
    if (entry === undefined) throw new Error(`missing block ${cid}`)
    yield entry.bytes
  }
}

async function importJob (job, blockstore) {
  const options = {
    profile: 'unixfs-v0-2015',
    cidVersion: job.cidVersion,
    rawLeaves: job.cidVersion === 1
  }
  if (job.chunkSize !== undefined) options.chunker = fixedSize({ chunkSize: job.chunkSize })
  if (job.maxLinks !== undefined) options.layout = balanced({ maxChildrenPerNode: job.maxLinks })
  let root = null
  for await (const entry of importer([{ content: generate(job) }], blockstore, options)) {
    root = entry.cid
  }
  return root
}

async function writeCar (root, blockstore, out) {
  const { writer, out: stream } = CarWriter.create([root])
  const done = pipeline(Readable.from(stream), createWriteStream(out))
  // Depth-first from the root, each block once.
  const seen = new Set()
  const stack = [root]
  while (stack.length > 0) {
    const cid = stack.pop()
    const key = cid.toString()
    if (seen.has(key)) continue
    seen.add(key)
    const { bytes } = blockstore.blocks.get(key)
    await writer.put({ cid, bytes })
    if (cid.code === 0x70) {
      const links = decode(bytes).Links
      for (let i = links.length - 1; i >= 0; i--) stack.push(links[i].Hash)
    }
  }
  await writer.close()
  await done
}

async function readCar (path) {
  const reader = await CarReader.fromIterable(createReadStream(path))
  const roots = await reader.getRoots()
  const store = new SinkBlockstore(true)
  let blocks = 0
  for await (const { cid, bytes } of reader.blocks()) {
    const digest = await sha256.digest(bytes)
    if (Buffer.compare(Buffer.from(digest.digest), Buffer.from(cid.multihash.digest)) !== 0) {
      throw new Error(`block ${cid} does not match its CID`)
    }
    await store.put(cid, bytes)
    blocks++
  }
  const entry = await exporter(roots[0], store)
  const hash = createHash('sha256')
  let size = 0
  for await (const piece of entry.content()) {
    hash.update(piece)
    size += piece.length
  }
  return { roots: roots.map(String), blocks, size, sha256: hash.digest('hex') }
}

async function main () {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const jobs = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  for (const job of jobs) {
    let result
    if (job.op === 'cid') {
      result = { cid: String(await importJob(job, new SinkBlockstore(false))) }
    } else if (job.op === 'car') {
      const store = new SinkBlockstore(true)
      const root = await importJob(job, store)
      await writeCar(root, store, job.out)
      result = { cid: String(root) }
    } else if (job.op === 'readcar') {
      result = await readCar(job.path)
    } else {
      throw new Error(`unknown op ${job.op}`)
    }
    process.stdout.write(JSON.stringify(result) + '\n')
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`)
  process.exit(1)
})
