// A space key as a QR code, for a second device to scan (modes 1 and 2). The
// payload is `qrPayload`'s string (proto/E2E.md); the drawing is uqr's (a
// maintained, dependency-free QR encoder), never home-made.

import { encode, renderSVG } from "uqr";
import type { DataKey } from "./envelope.js";
import { qrPayload } from "./recovery.js";

/** Medium error correction: a screen photographed at an angle still reads. */
const ECC = "M";

/** The QR code of `space`'s `key` as an SVG document. */
export async function qrSvg(space: string, key: DataKey): Promise<string> {
  return renderSVG(await qrPayload(space, key), { ecc: ECC });
}

/** The same QR code as a `data:` URL, for an `<img src>`. */
export async function qrDataUrl(space: string, key: DataKey): Promise<string> {
  return `data:image/svg+xml;base64,${btoa(await qrSvg(space, key))}`;
}

/** The QR code's modules (true: dark), row by row, for apps that draw it themselves (a canvas). */
export async function qrModules(space: string, key: DataKey): Promise<boolean[][]> {
  return encode(await qrPayload(space, key), { ecc: ECC }).data;
}
