// Renders /openapi.json: one card per operation, then the schemas. Plain DOM, no
// dependencies, text only (textContent), so it runs under the edge's strict CSP.
'use strict';

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return node;
}

function refName(ref) {
  return ref.split('/').pop();
}

/** A short text for a schema: a link to a named schema, or its type. */
function schemaLabel(schema) {
  if (!schema) return document.createTextNode('—');
  if (schema.$ref) return el('a', { href: '#schema-' + refName(schema.$ref) }, refName(schema.$ref));
  if (schema.oneOf) {
    const span = el('span');
    schema.oneOf.forEach((s, i) => {
      if (i) span.append(' | ');
      span.append(schemaLabel(s));
    });
    return span;
  }
  if (schema.type === 'array') {
    return el('span', {}, 'array of ', schemaLabel(schema.items));
  }
  if (schema.type === 'object' && schema.additionalProperties) {
    return el('span', {}, 'map of ', schemaLabel(schema.additionalProperties));
  }
  let t = Array.isArray(schema.type) ? schema.type.join(' | ') : (schema.type || 'any');
  if (schema.format) t += ` (${schema.format})`;
  if (schema.enum) t += ': ' + schema.enum.join(', ');
  return document.createTextNode(t);
}

function operationCard(path, method, op) {
  const card = el('article', { class: 'op' });
  card.append(el('h3', {}, el('span', { class: 'method ' + method }, method.toUpperCase()), ' ', el('code', {}, path)));
  if (op.description || op.summary) card.append(el('p', {}, op.description || op.summary));
  if (op.parameters && op.parameters.length) {
    const list = el('ul');
    for (const p of op.parameters) {
      list.append(el('li', {}, el('code', {}, p.name), ` (${p.in}) `, p.description || ''));
    }
    card.append(el('h4', {}, 'Parameters'), list);
  }
  if (op.requestBody) {
    const content = op.requestBody.content || {};
    const json = content['application/json'] || Object.values(content)[0] || {};
    card.append(el('h4', {}, 'Body'), el('p', {}, schemaLabel(json.schema), ' ', op.requestBody.description || ''));
  }
  const table = el('table', {}, el('tr', {}, el('th', {}, 'Status'), el('th', {}, 'Meaning'), el('th', {}, 'Body')));
  for (const [status, r] of Object.entries(op.responses || {})) {
    const content = r.content || {};
    const json = content['application/json'] || Object.values(content)[0];
    table.append(el('tr', {}, el('td', {}, status), el('td', {}, r.description || ''), el('td', {}, json ? schemaLabel(json.schema) : '—')));
  }
  card.append(el('h4', {}, 'Responses'), table);
  return card;
}

function schemaCard(name, schema) {
  const card = el('article', { class: 'schema', id: 'schema-' + name });
  card.append(el('h3', {}, name));
  if (schema.description) card.append(el('p', {}, schema.description));
  if (schema.properties) {
    const required = new Set(schema.required || []);
    const table = el('table', {}, el('tr', {}, el('th', {}, 'Field'), el('th', {}, 'Type'), el('th', {}, 'About')));
    for (const [field, s] of Object.entries(schema.properties)) {
      table.append(el('tr', {},
        el('td', {}, el('code', {}, field), required.has(field) ? '' : ' (optional)'),
        el('td', {}, schemaLabel(s)),
        el('td', {}, s.description || '')));
    }
    card.append(table);
  } else {
    card.append(el('p', {}, schemaLabel(schema)));
  }
  return card;
}

async function render() {
  const ops = document.getElementById('operations');
  const schemas = document.getElementById('schemas');
  try {
    const res = await fetch('/openapi.json');
    const doc = await res.json();
    document.getElementById('title').textContent = `${doc.info.title} ${doc.info.version || ''}`;
    document.getElementById('description').textContent = doc.info.description || '';
    ops.replaceChildren(el('h2', {}, 'Operations'));
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
        if (item[method]) ops.append(operationCard(path, method, item[method]));
      }
    }
    schemas.replaceChildren(el('h2', {}, 'Schemas'));
    for (const [name, s] of Object.entries((doc.components || {}).schemas || {})) {
      schemas.append(schemaCard(name, s));
    }
  } catch (e) {
    ops.replaceChildren(el('p', { class: 'error' }, 'Could not load /openapi.json: ' + e));
  }
}

document.addEventListener('DOMContentLoaded', render);
