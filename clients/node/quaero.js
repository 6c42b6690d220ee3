// A Quaero client for Node.js: stubs from protos/ at run time (@grpc/proto-loader), the bearer token on
// every call, Struct <-> plain objects, and the error details every failed call carries.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs"); // proto-loader's own dependency

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const FILES = ["quaero/manager/v1/jobs.proto", "quaero/manager/v1/auth.proto",
               "quaero/manager/v1/definitions.proto", "quaero/manager/v1/documents.proto",
               "quaero/executor/v1/executor.proto"];

// enums as names ("JOB_STATUS_RUNNING"), int64 as strings, defaults filled in, oneofs named.
const definition = protoLoader.loadSync(FILES, {includeDirs: [PROTOS], keepCase: true, longs: String,
                                               enums: String, defaults: true, oneofs: true});
const api = grpc.loadPackageDefinition(definition).quaero;

// google.rpc.Status and the two details Quaero sends, for grpc-status-details-bin.
const details = protobuf.Root.fromJSON({nested: {google: {nested: {
  protobuf: {nested: {Any: {fields: {type_url: {type: "string", id: 1}, value: {type: "bytes", id: 2}}}}},
  rpc: {nested: {
    Status: {fields: {code: {type: "int32", id: 1}, message: {type: "string", id: 2},
                      details: {rule: "repeated", type: "google.protobuf.Any", id: 3}}},
    ErrorInfo: {fields: {reason: {type: "string", id: 1}, domain: {type: "string", id: 2},
                         metadata: {keyType: "string", type: "string", id: 3}}},
    BadRequest: {fields: {field_violations: {rule: "repeated", type: "FieldViolation", id: 1}},
                 nested: {FieldViolation: {fields: {field: {type: "string", id: 1},
                                                    description: {type: "string", id: 2}}}}},
  }},
}}}});

/** The reason (ErrorInfo), the field at fault (BadRequest) and the metadata of a failed call. */
function errorDetails(error) {
  const found = {code: error.code, message: error.details, reason: "", field: "", metadata: {}};
  const raw = error.metadata && error.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return found;
  const status = details.lookupType("google.rpc.Status").decode(raw);
  for (const any of status.details) {
    if (any.type_url.endsWith("/google.rpc.ErrorInfo")) {
      const info = details.lookupType("google.rpc.ErrorInfo").decode(any.value);
      found.reason = info.reason;
      found.metadata = info.metadata || {};
    } else if (any.type_url.endsWith("/google.rpc.BadRequest")) {
      const bad = details.lookupType("google.rpc.BadRequest").decode(any.value);
      if (bad.field_violations.length) found.field = bad.field_violations[0].field;
    }
  }
  return found;
}

// google.protobuf.Struct as proto-loader sees it: {fields: {key: {stringValue: "x"}}}. A Value holds exactly
// one of nullValue, numberValue, stringValue, boolValue, structValue, listValue: camelCase even with
// keepCase, because protobufjs brings its own copy of the well-known types. A Value with none of them
// set (e.g. {string_value: "x"}, silently dropped) is refused by the manager as INVALID_VALUE.
function toValue(value) {
  if (value === null) return {nullValue: "NULL_VALUE"};
  if (Array.isArray(value)) return {listValue: {values: value.map(toValue)}};
  switch (typeof value) {
    case "string": return {stringValue: value};
    case "number": return {numberValue: value};
    case "boolean": return {boolValue: value};
    case "object": return {structValue: toStruct(value)};
    default: throw new TypeError(`no JSON form for ${typeof value}`);
  }
}

function toStruct(object) {
  return {fields: Object.fromEntries(Object.entries(object).map(([key, value]) => [key, toValue(value)]))};
}

function fromValue(value) {
  switch (value.kind) {
    case "nullValue": return null;
    case "numberValue": return value.numberValue;
    case "stringValue": return value.stringValue;
    case "boolValue": return value.boolValue;
    case "structValue": return fromStruct(value.structValue);
    case "listValue": return (value.listValue.values || []).map(fromValue);
    default: return undefined;
  }
}

function fromStruct(struct) {
  return Object.fromEntries(Object.entries((struct && struct.fields) || {}).map(([k, v]) => [k, fromValue(v)]));
}

/** Promise-returning stubs of one service with the token and a deadline on every call. */
function connect(address, token, Service, seconds = 10) {
  const client = new Service(address, grpc.credentials.createInsecure());
  const metadata = () => { const m = new grpc.Metadata(); m.set("authorization", `Bearer ${token}`); return m; };
  const stubs = {client, metadata};
  for (const name of Object.keys(Service.service)) {
    const method = Service.service[name];
    if (method.responseStream) {
      stubs[name] = (request) => client[name](request, metadata(), {deadline: Date.now() + 60_000});
    } else {
      stubs[name] = (request) => new Promise((resolve, reject) =>
        client[name](request, metadata(), {deadline: Date.now() + seconds * 1000},
                     (error, reply) => (error ? reject(error) : resolve(reply))));
    }
  }
  return stubs;
}

module.exports = {api, connect, errorDetails, toStruct, fromStruct, grpc};
