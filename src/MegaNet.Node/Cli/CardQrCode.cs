using System.Collections;
using System.Text;
using QRCoder;

namespace MegaNet.Node.Cli;

/// <summary>
/// A contact card as a QR code, for a phone to scan from a screen or from paper: drawn in a terminal with half-block
/// characters, or written as a PNG. The code holds the card's text form exactly, so what a scanner reads is what
/// <c>send --to</c> takes.
/// </summary>
internal static class CardQrCode
{
    /// <summary>Modules of light margin around the code, as the QR standard asks: scanners look for it.</summary>
    private const int QuietZone = 4;

    // M recovers from 15 % of the modules damaged (a smudge on paper, a crease) and still fits a card (94 bytes) into
    // version 6: 41 modules a side, 25 lines of a terminal with the margin.
    private const QRCodeGenerator.ECCLevel Correction = QRCodeGenerator.ECCLevel.M;

    /// <summary>The code's rows of modules, margin included: <c>true</c> is dark. Square.</summary>
    private static List<BitArray> Modules(string text)
    {
        using QRCodeData data = QRCodeGenerator.GenerateQrCode(text, Correction);
        List<BitArray> rows = data.ModuleMatrix;
        if (rows.Count < 21 + 2 * QuietZone || rows[0][0] || rows[QuietZone][QuietZone] is false)
        {
            // The drawing below relies on the generator's margin; a version of it without one would not scan.
            throw new InvalidOperationException($"The QR generator returned {rows.Count} modules a side without the expected {QuietZone}-module margin.");
        }

        return rows;
    }

    /// <summary>
    /// Draws the code for a terminal, two module rows per line (▀ ▄ █ and space), each line ending in a newline.
    /// Characters paint in the terminal's text colour and gaps show its background: on a dark background
    /// (<paramref name="darkBackground"/>, the common case) the light modules are painted, on a light one the dark
    /// modules, so the code shows dark on light either way, as scanners expect.
    /// </summary>
    public static string ToTerminal(string text, bool darkBackground)
    {
        List<BitArray> modules = Modules(text);
        int size = modules.Count;
        var drawing = new StringBuilder((size + 1) * (size + 1) / 2);
        for (int y = 0; y < size; y += 2)
        {
            for (int x = 0; x < size; x++)
            {
                bool top = modules[y][x] != darkBackground;
                // Past the last row (the sizes are odd) is the terminal's background: light on a light terminal, and
                // on a dark one the margin's last light row above it already ends the code.
                bool bottom = y + 1 < size && modules[y + 1][x] != darkBackground;
                drawing.Append((top, bottom) switch
                {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    _ => ' ',
                });
            }

            drawing.Append('\n');
        }

        return drawing.ToString();
    }

    /// <summary>The code as a black-on-white PNG, <paramref name="pixelsPerModule"/> pixels a module, margin included.</summary>
    public static byte[] ToPng(string text, int pixelsPerModule)
    {
        using QRCodeData data = QRCodeGenerator.GenerateQrCode(text, Correction);
        return new PngByteQRCode(data).GetGraphic(pixelsPerModule, drawQuietZones: true);
    }
}
