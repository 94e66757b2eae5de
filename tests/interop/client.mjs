// An automerge-repo client (the official npm packages, unchanged) for Outpost's interop test.
//
//   node client.mjs create <ws-url> <json>          creates a document, prints its URL, stays
//                                                   connected until stdin closes
//   node client.mjs expect <ws-url> <doc-url> <json> finds a document and waits until every
//                                                   field of <json> has that value; exits 0, or 1
//                                                   after 30 s
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [mode, url, arg1, arg2] = process.argv.slice(2)
const repo = new Repo({ network: [new WebSocketClientAdapter(url, 500)] })
const fail = (message) => {
  console.error(message)
  process.exit(1)
}
setTimeout(() => fail("timed out"), 30_000).unref()

const matches = (doc, expected) =>
  Object.entries(expected).every(([path, value]) => {
    const actual = path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), doc)
    return JSON.stringify(actual === undefined ? null : actual.toString()) === JSON.stringify(value)
  })

if (mode === "create") {
  const handle = repo.create(JSON.parse(arg1))
  console.log(handle.url)
  process.stdin.resume()
  process.stdin.on("end", () => process.exit(0))
} else if (mode === "expect") {
  const expected = JSON.parse(arg2)
  const handle = await repo.find(arg1)
  const check = () => {
    const doc = handle.doc()
    if (doc && matches(doc, expected)) {
      console.log(JSON.stringify(doc))
      process.exit(0)
    }
  }
  handle.on("change", check)
  check()
} else {
  fail(`unknown mode ${mode}`)
}
