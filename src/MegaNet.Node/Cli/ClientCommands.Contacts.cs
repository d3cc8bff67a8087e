using System.CommandLine;
using System.Text.Json.Nodes;
using MegaNet.Api;

namespace MegaNet.Node.Cli;

/// <summary><c>meganet contact</c>: names for contact cards, kept beside the identity file.</summary>
internal static partial class ClientCommands
{
    private static Command ContactCommand()
    {
        var addIdentity = IdentityOption();
        var name = new Argument<string>("name") { Description = $"The contact's name (1 to {Contacts.MaxNameLength} characters, not beginning with mn1; quote one with spaces, and put one beginning with -- after a lone --)." };
        var card = new Argument<string>("card") { Description = "The contact's card (mn1...), as 'meganet id show' prints it or a QR code holds it." };
        var force = new Option<bool>("--force") { Description = "Give the name to this card even if it names another one now." };
        var add = new Command("add", "Save a contact card under a name: 'send --to NAME' then sends to it, and fetch and listen show the name for mail signed by that card.")
        {
            addIdentity, name, card, force,
        };
        add.SetAction((parse, ct) => Run(async () =>
        {
            string identityPath = parse.GetValue(addIdentity)!;
            if (LooksLikeCard(parse.GetValue(name)!) && !LooksLikeCard(parse.GetValue(card)!))
            {
                // Told only that the card did not start with mn1, a user who typed them the other way round looked for
                // what was wrong with the card.
                throw new UsageException("contact add", "the card comes second: 'meganet contact add NAME CARD'.");
            }

            ContactCard parsed = ParseCard(parse.GetValue(card)!, "card");
            // The contacts go beside an identity: a mistyped --identity (or none made yet) put them beside nothing.
            LoadIdentity(identityPath).Dispose();
            string? saved = null;
            await Contacts.ChangeAsync(identityPath, c => saved = c.Add(parse.GetValue(name)!, parsed, parse.GetValue(force)), ct);
            Console.Error.WriteLine(saved is not null
                ? $"saved '{Printable(saved, multiline: false)}' in {Contacts.PathOf(identityPath)}"
                : $"already saved so in {Contacts.PathOf(identityPath)}");
            return 0;
        }));

        var removeIdentity = IdentityOption();
        var removeName = new Argument<string>("name") { Description = "The contact's name (case is ignored)." };
        var remove = new Command("remove", "Forget a contact: its mail is shown by its card again.") { removeIdentity, removeName };
        remove.SetAction((parse, ct) => Run(async () =>
        {
            string identityPath = parse.GetValue(removeIdentity)!;
            // As add and list: without an identity there are no contacts to remove, and the lock file made the
            // identity's directory (the default one, with the umask's mode) for nothing.
            LoadIdentity(identityPath).Dispose();
            string removed = string.Empty;
            await Contacts.ChangeAsync(identityPath, c => removed = c.Remove(parse.GetValue(removeName)!), ct);
            Console.Error.WriteLine($"removed '{Printable(removed, multiline: false)}' from {Contacts.PathOf(identityPath)}");
            return 0;
        }));

        var listIdentity = IdentityOption();
        var json = JsonOption("One JSON object per contact: {name, card, address}.");
        var list = new Command("list", "Print your contacts, one 'NAME  CARD' line each.") { listIdentity, json };
        list.SetAction(parse => Run(() =>
        {
            string identityPath = parse.GetValue(listIdentity)!;
            // As add and remove: a mistyped --identity said only "no contacts" and exited 0.
            LoadIdentity(identityPath).Dispose();
            Contacts contacts = Contacts.Load(identityPath);
            int width = contacts.Entries.Count == 0 ? 0 : contacts.Entries.Max(e => e.Name.Length);
            foreach ((string contactName, ContactCard contactCard) in contacts.Entries)
            {
                PrintLine(parse.GetValue(json)
                    ? new JsonObject { ["name"] = contactName, ["card"] = contactCard.ToString(), ["address"] = Convert.ToHexStringLower(contactCard.Address) }.ToJsonString()
                    : $"{Printable(contactName, multiline: false).PadRight(width)}  {contactCard}");
            }

            if (contacts.Entries.Count == 0)
            {
                Console.Error.WriteLine($"no contacts in {contacts.Path}; save one with 'meganet contact add{IdentityFlag(identityPath)} NAME CARD'");
            }

            return Task.FromResult(0);
        }));

        return new Command("contact", $"Your contacts: names for contact cards, kept in the file beside the identity file ending in {SideFiles.Contacts}, one 'CARD NAME' a line; " +
            "a line whose first character other than white space is # is a comment, kept where it is (as are blank lines) when add or remove rewrites the file.") { add, remove, list };
    }
}
