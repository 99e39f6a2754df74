// Runs an ONNX model with ONNX Runtime (onnxruntime-node) on raw float32 input rows and writes
// each output as raw float32 next to OUT_PREFIX; prints the session's input/output names as JSON.
// usage: NODE_PATH=<dir>/node_modules node ort_run.js MODEL INPUT.bin ROWS FEATURES OUT_PREFIX
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, inputPath, rows, features, outPrefix] = process.argv.slice(2);
  if (!outPrefix) throw new Error('usage: ort_run.js MODEL INPUT.bin ROWS FEATURES OUT_PREFIX');
  const session = await ort.InferenceSession.create(model);
  const raw = fs.readFileSync(inputPath);
  const n = Number(rows), f = Number(features);
  if (raw.length !== n * f * 4) throw new Error(`${inputPath}: expected ${n * f * 4} bytes, got ${raw.length}`);
  const data = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  const outputs = await session.run({ input: new ort.Tensor('float32', data, [n, f]) });
  const shapes = {};
  for (const name of session.outputNames) {
    const t = outputs[name];
    fs.writeFileSync(`${outPrefix}.${name}.bin`, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    shapes[name] = t.dims;
  }
  console.log(JSON.stringify({ inputs: session.inputNames, outputs: session.outputNames, shapes }));
}

main().catch((e) => { console.error(`ort_run.js: ${e.message}`); process.exit(1); });
