"""QR codes as pixels, for linking a printed poster to its web page."""

from __future__ import annotations

import numpy as np

QR_BORDER = 4  # the quiet zone the QR standard asks for, in modules


def qr_pixels(url: str) -> np.ndarray:
    """uint8 (H, W) QR code of ``url``, one pixel per module: 0 = dark, 255 = light."""
    if not url or not url.strip():
        raise ValueError(f"url={url!r} is empty; give the address the QR code should open")
    try:
        import qrcode
    except ImportError:
        raise ValueError("the QR code needs the qrcode package: pip install qrcode") from None
    code = qrcode.QRCode(border=QR_BORDER, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(url)
    code.make(fit=True)
    return np.where(np.asarray(code.get_matrix(), dtype=bool), 0, 255).astype(np.uint8)
