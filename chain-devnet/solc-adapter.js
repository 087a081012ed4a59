#!/usr/bin/env node
// Makes solc-js (npm `solc`) answer like the native solc binary, so that py-solc-x
// (`solcx.compile_standard`) and forge (`solc = <this file>`) can use it. No native solc
// can be downloaded on the machines pcn targets; solc-js is the same compiler built to wasm.
//
// Supported: --version, --standard-json [file] (input from the file or stdin),
// --base-path, --include-path (repeatable), --allow-paths (comma separated),
// --output-dir / --overwrite (accepted, ignored: standard JSON goes to stdout).
// Unknown flags are ignored, as py-solc-x and forge pass flags we do not need.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require(path.join(__dirname, "node_modules", "solc"));

const VALUE_FLAGS = new Set([
  "--base-path", "--include-path", "--allow-paths", "--output-dir", "--evm-version",
  "--optimize-runs",
]);

function parseArgs(argv) {
  const opts = { includePaths: [], allowPaths: [], basePath: null, standardJson: false,
    version: false, inputFile: null };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value = null;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    } else if (VALUE_FLAGS.has(arg)) {
      value = argv[++i];
    }
    switch (arg) {
      case "--version": opts.version = true; break;
      case "--standard-json":
        opts.standardJson = true;
        if (value !== null && value !== "") opts.inputFile = value; // `--standard-json=FILE`
        break;
      case "--base-path": opts.basePath = value; break;
      case "--include-path": opts.includePaths.push(value); break;
      case "--allow-paths":
        opts.allowPaths.push(...String(value).split(",").filter(Boolean)); break;
      default:
        if (!arg.startsWith("-") && opts.standardJson && opts.inputFile === null) {
          opts.inputFile = arg;
        }
    }
  }
  return opts;
}

function nativeVersion() {
  // solc-js says "...Emscripten.clang"; forge and py-solc-x parse a native-looking version.
  return solc.version().replace(/\.Emscripten\.clang$/, ".Linux.g++");
}

function makeImportCallback(opts, remappings) {
  const roots = [opts.basePath, ...opts.includePaths, ...opts.allowPaths, process.cwd()]
    .filter(Boolean);
  const sorted = remappings
    .map((r) => { const [ctx, rest] = r.includes(":") ? r.split(":", 2) : ["", r];
      const [prefix, target] = rest.split("="); return { ctx, prefix, target }; })
    .filter((r) => r.prefix !== undefined && r.target !== undefined)
    .sort((a, b) => b.prefix.length - a.prefix.length);
  return function findImports(importPath) {
    const candidates = [importPath];
    for (const r of sorted) {
      if (importPath.startsWith(r.prefix)) {
        candidates.push(r.target + importPath.slice(r.prefix.length));
        break;
      }
    }
    for (const cand of candidates) {
      const tries = path.isAbsolute(cand) ? [cand] : roots.map((root) => path.join(root, cand));
      for (const full of tries) {
        try {
          return { contents: fs.readFileSync(full, "utf8") };
        } catch (_) { /* try the next location */ }
      }
    }
    return { error: `File not found: ${importPath}` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.version) {
    process.stdout.write(
      `solc, the solidity compiler commandline interface\nVersion: ${nativeVersion()}\n`);
    return;
  }
  if (!opts.standardJson) {
    process.stderr.write("solc-adapter: only --version and --standard-json are supported\n");
    process.exitCode = 1;
    return;
  }
  const raw = fs.readFileSync(opts.inputFile || 0, "utf8");
  let input;
  try {
    input = JSON.parse(raw);
  } catch (e) {
    process.stdout.write(JSON.stringify({ errors: [{ severity: "error", type: "JSONError",
      component: "general", message: `Invalid standard JSON input: ${e.message}`,
      formattedMessage: `JSONError: ${e.message}` }] }));
    return;
  }
  const remappings = (input.settings && input.settings.remappings) || [];
  const output = solc.compile(JSON.stringify(input),
    { import: makeImportCallback(opts, remappings) });
  // Never call process.exit() here: it truncates piped output at 128 KiB.
  process.stdout.write(output);
  process.exitCode = 0;
}

main();
