/**
 * RFC 7512 PKCS#11 URIs, the subset that selects a key: `pkcs11:token=...;object=...;id=%01%02;type=private`.
 * Query attributes are refused except module-name/module-path, which are ignored: the module comes
 * from pkcs11.module and a PIN never belongs in a URI that may be logged.
 */
export interface Pkcs11Uri {
  object?: string;
  /** CKA_ID as lowercase hex. */
  id?: string;
  type?: 'private' | 'public' | 'cert' | 'secret-key' | 'data';
  token?: string;
  serial?: string;
  manufacturer?: string;
  model?: string;
}

const PATH_ATTRIBUTES = new Set(['object', 'id', 'type', 'token', 'serial', 'manufacturer', 'model', 'library-manufacturer', 'library-description', 'library-version', 'slot-description', 'slot-manufacturer', 'slot-id']);
const TYPES = new Set(['private', 'public', 'cert', 'secret-key', 'data']);

function percentDecode(value: string, attribute: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '%') {
      const hex = value.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new Error(`bad percent-encoding in ${attribute}`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else {
      out.push(...Buffer.from(c, 'utf8'));
    }
  }
  return Buffer.from(out);
}

export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (!uri.startsWith('pkcs11:')) throw new Error('must start with "pkcs11:"');
  const rest = uri.slice('pkcs11:'.length);
  const q = rest.indexOf('?');
  const pathPart = q === -1 ? rest : rest.slice(0, q);
  const query = q === -1 ? '' : rest.slice(q + 1);
  const result: Pkcs11Uri = {};
  const seen = new Set<string>();
  for (const attr of pathPart.split(';')) {
    if (attr === '') continue;
    const eq = attr.indexOf('=');
    if (eq <= 0) throw new Error(`malformed attribute "${attr}"`);
    const name = attr.slice(0, eq).toLowerCase();
    if (!PATH_ATTRIBUTES.has(name)) throw new Error(`unknown attribute "${name}"`);
    if (seen.has(name)) throw new Error(`attribute "${name}" repeated`);
    seen.add(name);
    const raw = percentDecode(attr.slice(eq + 1), name);
    switch (name) {
      case 'object': result.object = raw.toString('utf8'); break;
      case 'id': result.id = raw.toString('hex'); break;
      case 'token': result.token = raw.toString('utf8'); break;
      case 'serial': result.serial = raw.toString('utf8'); break;
      case 'manufacturer': result.manufacturer = raw.toString('utf8'); break;
      case 'model': result.model = raw.toString('utf8'); break;
      case 'type': {
        const t = raw.toString('utf8');
        if (!TYPES.has(t)) throw new Error(`unknown type "${t}"`);
        result.type = t as Pkcs11Uri['type'];
        break;
      }
      default: break; // library-/slot- attributes do not select a key object
    }
  }
  for (const attr of query.split('&')) {
    if (attr === '') continue;
    const name = attr.split('=')[0].toLowerCase();
    if (name === 'pin-value' || name === 'pin-source') throw new Error(`"${name}" is not accepted: give the PIN with pkcs11.pin`);
    if (name !== 'module-name' && name !== 'module-path') throw new Error(`unknown query attribute "${name}"`);
  }
  if (result.type !== undefined && result.type !== 'private') throw new Error('type must be "private" for a signing key');
  return result;
}
