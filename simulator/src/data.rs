//! The tables events are drawn from: names by origin, countries (cities and postal-code
//! shapes, streets, phone formats, e-mail providers), retailers, campaigns, user agents.
//!
//! Templates use `#` for a random digit and `@` for a random capital letter. Every value
//! is a plain `&'static str`, so drawing one costs an index and no allocation.

/// A name as written on the card, and the ASCII form people use in e-mail addresses.
pub(crate) type Name = (&'static str, &'static str);

/// First and last names of one origin.
pub(crate) struct Origin {
    /// Given names, mixed genders, accents and compound forms kept.
    pub first: &'static [Name],
    /// Family names, particles and hyphens kept.
    pub last: &'static [Name],
}

/// How a country writes the house number and the street.
#[derive(Clone, Copy)]
pub(crate) enum StreetStyle {
    /// `12 rue de la Roquette`, `12 bis avenue Jean-Jaurès`.
    French,
    /// `Bahnhofstraße 12`, `Hauptstraße 7a`.
    German,
    /// `27 Baker Street`, `Flat 3, 27 Baker Street`.
    British,
    /// `Calle de Alcalá, 12`, `Calle de Alcalá, 12, 3º B`.
    Spanish,
    /// `ul. Marszałkowska 12`, `ul. Marszałkowska 12/4`.
    Polish,
    /// `1600 Pennsylvania Ave NW`, `12 Main St Apt 4B`.
    American,
    /// `Keizersgracht 123`, `Keizersgracht 123-2`.
    Dutch,
    /// `4520 boulevard Saint-Laurent`, `4520 boulevard Saint-Laurent, app. 3`.
    Quebec,
}

/// Where a customer lives: address and phone shapes, local e-mail providers.
pub(crate) struct Country {
    /// ISO 3166-1 alpha-2 code, written in `customer.address.country`.
    pub code: &'static str,
    /// Indexes into [`ORIGINS`] of the names most common there.
    pub origins: &'static [usize],
    /// City and postal-code template.
    pub cities: &'static [(&'static str, &'static str)],
    /// Street names, written with [`Country::street_style`].
    pub streets: &'static [&'static str],
    /// How the house number goes with the street.
    pub street_style: StreetStyle,
    /// Phone number templates, several national and international formats.
    pub phones: &'static [&'static str],
    /// Local e-mail providers (global ones are in [`GLOBAL_PROVIDERS`]).
    pub providers: &'static [&'static str],
}

/// A retail chain sending events.
pub(crate) struct Retailer {
    /// `retailer.id`.
    pub id: &'static str,
    /// Index into [`COUNTRIES`] of where its stores are.
    pub country: usize,
    /// `coupon.currency`.
    pub currency: &'static str,
    /// First four digits of its loyalty cards.
    pub card_prefix: &'static str,
    /// How it numbers its stores in `retailer.store_id`.
    pub store_style: StoreStyle,
}

/// How a retailer writes `retailer.store_id`.
#[derive(Clone, Copy)]
pub(crate) enum StoreStyle {
    /// `FR-75011-042`: country, postal code, store number.
    Postal,
    /// A GS1 Global Location Number: 13 digits with a GS1 check digit.
    Gln,
    /// `0042`: a zero-padded store number.
    Number,
    /// `S0042`.
    Letter,
}

/// A coupon campaign.
pub(crate) struct Campaign {
    /// `coupon.campaign_id`.
    pub id: &'static str,
    /// First group of its coupon codes.
    pub code_prefix: &'static str,
    /// Possible `coupon.face_value_cents`.
    pub face_values: &'static [u64],
}

pub(crate) const FRENCH: usize = 0;
pub(crate) const GERMAN: usize = 1;
pub(crate) const POLISH: usize = 2;
pub(crate) const SPANISH: usize = 3;
pub(crate) const NIGERIAN: usize = 4;
pub(crate) const VIETNAMESE: usize = 5;
pub(crate) const BRITISH_IRISH: usize = 6;
pub(crate) const AMERICAN: usize = 7;
pub(crate) const DUTCH: usize = 8;
pub(crate) const QUEBECOIS: usize = 9;

/// Names by origin, indexed by the constants above.
pub(crate) const ORIGINS: [Origin; 10] = [
    Origin {
        first: &[
            ("Émilie", "emilie"),
            ("Zoë", "zoe"),
            ("François", "francois"),
            ("Hélène", "helene"),
            ("Jérôme", "jerome"),
            ("Chloé", "chloe"),
            ("Mathéo", "matheo"),
            ("Léa", "lea"),
            ("Anaïs", "anais"),
            ("Benoît", "benoit"),
            ("Marie-Claire", "marie-claire"),
            ("Jean-Baptiste", "jean-baptiste"),
            ("Camille", "camille"),
            ("Thibault", "thibault"),
            ("Océane", "oceane"),
            ("Gaëlle", "gaelle"),
        ],
        last: &[
            ("Dupont", "dupont"),
            ("Lefèvre", "lefevre"),
            ("Moreau", "moreau"),
            ("Rousseau", "rousseau"),
            ("Fontaine", "fontaine"),
            ("Mercier", "mercier"),
            ("Chevalier", "chevalier"),
            ("Lemaître", "lemaitre"),
            ("Faure-Dubois", "faure-dubois"),
            ("de La Tour", "delatour"),
            ("Bézier", "bezier"),
            ("Girard", "girard"),
        ],
    },
    Origin {
        first: &[
            ("Jürgen", "juergen"),
            ("Lukas", "lukas"),
            ("Sören", "soeren"),
            ("Anneliese", "anneliese"),
            ("Maximilian", "maximilian"),
            ("Jörg", "joerg"),
            ("Käthe", "kaethe"),
            ("Friederike", "friederike"),
            ("Niklas", "niklas"),
            ("Björn", "bjoern"),
            ("Hannah", "hannah"),
        ],
        last: &[
            ("Müller", "mueller"),
            ("Schröder", "schroeder"),
            ("Weiß", "weiss"),
            ("Schmidt", "schmidt"),
            ("Köhler", "koehler"),
            ("Hoffmann", "hoffmann"),
            ("Großmann", "grossmann"),
            ("von Bülow", "vonbuelow"),
            ("Zimmermann", "zimmermann"),
            ("Krüger", "krueger"),
        ],
    },
    Origin {
        first: &[
            ("Łukasz", "lukasz"),
            ("Małgorzata", "malgorzata"),
            ("Wojciech", "wojciech"),
            ("Agnieszka", "agnieszka"),
            ("Paweł", "pawel"),
            ("Zofia", "zofia"),
            ("Grzegorz", "grzegorz"),
            ("Katarzyna", "katarzyna"),
            ("Jędrzej", "jedrzej"),
            ("Łucja", "lucja"),
        ],
        last: &[
            ("Kowalski", "kowalski"),
            ("Wiśniewska", "wisniewska"),
            ("Wójcik", "wojcik"),
            ("Kamińska", "kaminska"),
            ("Lewandowski", "lewandowski"),
            ("Zieliński", "zielinski"),
            ("Dąbrowski", "dabrowski"),
            ("Woźniak", "wozniak"),
            ("Grabowska-Nowak", "grabowska-nowak"),
        ],
    },
    Origin {
        first: &[
            ("José", "jose"),
            ("María José", "mariajose"),
            ("Íñigo", "inigo"),
            ("Lucía", "lucia"),
            ("Álvaro", "alvaro"),
            ("Begoña", "begona"),
            ("Martín", "martin"),
            ("Ainhoa", "ainhoa"),
            ("Sofía", "sofia"),
            ("Jesús", "jesus"),
        ],
        last: &[
            ("García-López", "garcia-lopez"),
            ("Fernández", "fernandez"),
            ("Muñoz", "munoz"),
            ("Pérez Sánchez", "perezsanchez"),
            ("Ibáñez", "ibanez"),
            ("Gómez", "gomez"),
            ("Rodríguez", "rodriguez"),
            ("Castaño", "castano"),
            ("de la Fuente", "delafuente"),
        ],
    },
    Origin {
        first: &[
            ("Ngozi", "ngozi"),
            ("Chukwuemeka", "chukwuemeka"),
            ("Oluwaseun", "oluwaseun"),
            ("Adaeze", "adaeze"),
            ("Babatunde", "babatunde"),
            ("Funmilayo", "funmilayo"),
            ("Ifeanyi", "ifeanyi"),
            ("Aisha", "aisha"),
            ("Chiamaka", "chiamaka"),
        ],
        last: &[
            ("Okonkwo", "okonkwo"),
            ("Adeyemi", "adeyemi"),
            ("Nwosu", "nwosu"),
            ("Eze", "eze"),
            ("Okafor", "okafor"),
            ("Balogun", "balogun"),
            ("Abubakar", "abubakar"),
            // Yoruba tone marks as combining characters, as some keyboards type them.
            ("Adébáyọ̀", "adebayo"),
        ],
    },
    Origin {
        first: &[
            ("Thị Hương", "thihuong"),
            ("Minh", "minh"),
            ("Quỳnh", "quynh"),
            ("Đức", "duc"),
            ("Thảo", "thao"),
            ("Hoàng Anh", "hoanganh"),
            ("Phương", "phuong"),
            ("Tuấn", "tuan"),
        ],
        last: &[
            ("Nguyễn", "nguyen"),
            ("Trần", "tran"),
            ("Lê", "le"),
            ("Phạm", "pham"),
            ("Huỳnh", "huynh"),
            ("Võ", "vo"),
            ("Đặng", "dang"),
        ],
    },
    Origin {
        first: &[
            ("Siobhán", "siobhan"),
            ("Aoife", "aoife"),
            ("Seán", "sean"),
            ("Niamh", "niamh"),
            ("Oliver", "oliver"),
            ("Charlotte", "charlotte"),
            ("Rhys", "rhys"),
            ("Eilidh", "eilidh"),
            ("Ciarán", "ciaran"),
        ],
        last: &[
            ("O'Brien", "obrien"),
            ("O'Sullivan", "osullivan"),
            ("McAllister", "mcallister"),
            ("Smith", "smith"),
            ("Fitzgerald", "fitzgerald"),
            ("Ní Bhriain", "nibhriain"),
            ("Featherstonehaugh", "featherstonehaugh"),
            ("Llewellyn", "llewellyn"),
            ("Walsh", "walsh"),
        ],
    },
    Origin {
        first: &[
            ("DeShawn", "deshawn"),
            ("Madison", "madison"),
            ("Jamal", "jamal"),
            ("Kayleigh", "kayleigh"),
            ("Tyler", "tyler"),
            ("Brianna", "brianna"),
            ("Xavier", "xavier"),
            ("Mary Ellen", "maryellen"),
        ],
        last: &[
            ("Johnson", "johnson"),
            ("Williams", "williams"),
            ("Washington", "washington"),
            ("Kim", "kim"),
            ("Patel", "patel"),
            ("Nakamura", "nakamura"),
            ("Van der Berg", "vanderberg"),
            ("Hernández", "hernandez"),
        ],
    },
    Origin {
        first: &[
            ("Daan", "daan"),
            ("Sanne", "sanne"),
            ("Joëlle", "joelle"),
            ("Bram", "bram"),
            ("Femke", "femke"),
            ("Ruud", "ruud"),
        ],
        last: &[
            ("de Vries", "devries"),
            ("van den Berg", "vandenberg"),
            ("Jansen", "jansen"),
            ("Bakker", "bakker"),
            ("van Dijk", "vandijk"),
            ("IJzerman", "ijzerman"),
        ],
    },
    Origin {
        first: &[
            ("Mélanie", "melanie"),
            ("Gabriel", "gabriel"),
            ("Amélie", "amelie"),
            ("Étienne", "etienne"),
            ("Maëlle", "maelle"),
        ],
        last: &[
            ("Tremblay", "tremblay"),
            ("Gagnon", "gagnon"),
            ("Côté", "cote"),
            ("Bouchard", "bouchard"),
            ("Lévesque", "levesque"),
        ],
    },
];

pub(crate) const FR: usize = 0;
pub(crate) const DE: usize = 1;
pub(crate) const GB: usize = 2;
pub(crate) const ES: usize = 3;
pub(crate) const PL: usize = 4;
pub(crate) const US: usize = 5;
pub(crate) const NL: usize = 6;
pub(crate) const CA: usize = 7;

/// Countries, indexed by the constants above.
pub(crate) const COUNTRIES: [Country; 8] = [
    Country {
        code: "FR",
        origins: &[FRENCH, FRENCH, FRENCH, VIETNAMESE],
        cities: &[
            ("Paris", "7500#"),
            ("Paris", "7501#"),
            ("Lyon", "6900#"),
            ("Marseille", "1300#"),
            ("Lille", "59000"),
            ("Bordeaux", "33#00"),
            ("Strasbourg", "6700#"),
            ("Saint-Étienne", "42000"),
            ("Aix-en-Provence", "13090"),
            ("Besançon", "25000"),
            ("Nîmes", "30900"),
            ("Boulogne-Billancourt", "92100"),
        ],
        streets: &[
            "rue de la Roquette",
            "avenue Jean-Jaurès",
            "boulevard Saint-Michel",
            "rue du Faubourg Saint-Honoré",
            "place de l'Église",
            "allée des Tilleuls",
            "chemin des Écoliers",
            "rue Émile Zola",
            "impasse du Moulin",
            "quai de la Tournelle",
        ],
        street_style: StreetStyle::French,
        phones: &[
            "+33 6 ## ## ## ##",
            "+33 7 ## ## ## ##",
            "06 ## ## ## ##",
            "07 ## ## ## ##",
            "06.##.##.##.##",
            "06########",
            "+336########",
            "01 ## ## ## ##",
            "+33 (0)6 ## ## ## ##",
        ],
        providers: &[
            "orange.fr",
            "free.fr",
            "laposte.net",
            "sfr.fr",
            "hotmail.fr",
            "example.fr",
        ],
    },
    Country {
        code: "DE",
        origins: &[GERMAN, GERMAN, GERMAN, POLISH],
        cities: &[
            ("Berlin", "10###"),
            ("München", "80###"),
            ("Hamburg", "20###"),
            ("Köln", "50###"),
            ("Frankfurt am Main", "60###"),
            ("Düsseldorf", "40###"),
            ("Stuttgart", "70###"),
            ("Leipzig", "04###"),
            ("Görlitz", "02826"),
        ],
        streets: &[
            "Bahnhofstraße",
            "Hauptstraße",
            "Schillerstraße",
            "Am Weißen Stein",
            "Königsallee",
            "Friedrich-Ebert-Straße",
            "Lindenweg",
            "Mühlgasse",
            "Kurfürstendamm",
        ],
        street_style: StreetStyle::German,
        phones: &[
            "+49 151 #### ####",
            "+49 17# #######",
            "0151 ########",
            "0176 #######",
            "+49 30 ########",
            "030 #######",
            "(089) ### ####",
            "+49 (0)40 ######",
        ],
        providers: &["web.de", "gmx.de", "t-online.de", "posteo.de"],
    },
    Country {
        code: "GB",
        origins: &[BRITISH_IRISH, BRITISH_IRISH, NIGERIAN, BRITISH_IRISH],
        cities: &[
            ("London", "SW1A #@@"),
            ("London", "E# #@@"),
            ("London", "N1# #@@"),
            ("Manchester", "M# #@@"),
            ("Birmingham", "B## #@@"),
            ("Edinburgh", "EH# #@@"),
            ("Leeds", "LS# #@@"),
            ("Glasgow", "G## #@@"),
            ("Cardiff", "CF## #@@"),
            ("Belfast", "BT# #@@"),
        ],
        streets: &[
            "Baker Street",
            "Queen's Road",
            "High Street",
            "St John's Wood Road",
            "Church Lane",
            "Victoria Road",
            "Kingsway",
            "Princes Street",
            "Station Approach",
        ],
        street_style: StreetStyle::British,
        // Ofcom's ranges reserved for drama, so no generated number rings anyone.
        phones: &[
            "+44 7700 900###",
            "07700 900###",
            "(020) 7946 0###",
            "+44 20 7946 0###",
            "0161 496 0###",
            "+447700900###",
        ],
        providers: &["btinternet.com", "hotmail.co.uk", "yahoo.co.uk", "sky.com"],
    },
    Country {
        code: "ES",
        origins: &[SPANISH, SPANISH, SPANISH, NIGERIAN],
        cities: &[
            ("Madrid", "280##"),
            ("Barcelona", "080##"),
            ("Sevilla", "410##"),
            ("Valencia", "460##"),
            ("Málaga", "290##"),
            ("Bilbao", "480##"),
            ("A Coruña", "150##"),
            ("Logroño", "260##"),
            ("Cádiz", "110##"),
        ],
        streets: &[
            "Calle de Alcalá",
            "Carrer de Mallorca",
            "Avenida de la Constitución",
            "Calle Mayor",
            "Paseo de la Castellana",
            "Calle del Príncipe de Vergara",
            "Rúa do Vilar",
            "Calle Larios",
        ],
        street_style: StreetStyle::Spanish,
        phones: &[
            "+34 6## ## ## ##",
            "6## ### ###",
            "+34 91 ### ## ##",
            "+346########",
            "6########",
        ],
        providers: &["hotmail.es", "telefonica.net", "yahoo.es"],
    },
    Country {
        code: "PL",
        origins: &[POLISH, POLISH, POLISH, VIETNAMESE],
        cities: &[
            ("Warszawa", "0#-###"),
            ("Kraków", "3#-###"),
            ("Łódź", "9#-###"),
            ("Wrocław", "5#-###"),
            ("Poznań", "6#-###"),
            ("Gdańsk", "80-###"),
            ("Bielsko-Biała", "43-3##"),
        ],
        streets: &[
            "ul. Marszałkowska",
            "ul. Piotrkowska",
            "al. Jerozolimskie",
            "ul. Świętokrzyska",
            "ul. Długa",
            "ul. Floriańska",
            "os. Tysiąclecia",
            "ul. Żeromskiego",
        ],
        street_style: StreetStyle::Polish,
        phones: &[
            "+48 5## ### ###",
            "5##-###-###",
            "+48 22 ### ## ##",
            "6## ### ###",
            "+48 (0) 6## ### ###",
        ],
        providers: &["wp.pl", "onet.pl", "o2.pl", "interia.pl"],
    },
    Country {
        code: "US",
        origins: &[AMERICAN, AMERICAN, AMERICAN, NIGERIAN, VIETNAMESE, SPANISH],
        cities: &[
            ("New York", "100##"),
            ("Chicago", "606##"),
            ("Houston", "770##"),
            ("Los Angeles", "900##"),
            ("Washington", "200##"),
            ("Seattle", "981##"),
            ("Coeur d'Alene", "83814"),
            ("New Orleans", "701##-####"),
        ],
        streets: &[
            "Pennsylvania Ave NW",
            "Main St",
            "Elm Street",
            "N Michigan Ave",
            "Broadway",
            "Martin Luther King Jr Blvd",
            "5th Avenue",
            "Peachtree St NE",
        ],
        street_style: StreetStyle::American,
        // The 555-01xx block is reserved for fiction.
        phones: &[
            "+1-202-555-01##",
            "(312) 555-01##",
            "646.555.01##",
            "+1 415 555 01##",
            "206-555-01##",
            "+12125550###",
        ],
        providers: &["yahoo.com", "aol.com", "comcast.net", "example.com"],
    },
    Country {
        code: "NL",
        origins: &[DUTCH, DUTCH, DUTCH, NIGERIAN],
        cities: &[
            ("Amsterdam", "10## @@"),
            ("Rotterdam", "30## @@"),
            ("Utrecht", "35## @@"),
            ("Den Haag", "25## @@"),
            ("'s-Hertogenbosch", "52## @@"),
            ("Eindhoven", "56## @@"),
        ],
        streets: &[
            "Keizersgracht",
            "Prinsengracht",
            "Damrak",
            "Coolsingel",
            "Oudegracht",
            "Lange Voorhout",
        ],
        street_style: StreetStyle::Dutch,
        phones: &[
            "+31 6 ########",
            "06-########",
            "06 ## ## ## ##",
            "020-### ####",
        ],
        providers: &["ziggo.nl", "kpnmail.nl", "xs4all.nl"],
    },
    Country {
        code: "CA",
        origins: &[QUEBECOIS, QUEBECOIS, BRITISH_IRISH, VIETNAMESE],
        cities: &[
            ("Montréal", "H#@ #@#"),
            ("Québec", "G1@ #@#"),
            ("Toronto", "M#@ #@#"),
            ("Vancouver", "V#@ #@#"),
            ("Trois-Rivières", "G9@ #@#"),
        ],
        streets: &[
            "rue Sainte-Catherine O.",
            "boulevard Saint-Laurent",
            "avenue du Mont-Royal E.",
            "Yonge Street",
            "rue Saint-Jean",
            "Queen Street W",
        ],
        street_style: StreetStyle::Quebec,
        phones: &[
            "+1 514-555-01##",
            "(438) 555-01##",
            "416.555.01##",
            "+1 (604) 555-01##",
        ],
        providers: &["videotron.ca", "sympatico.ca", "shaw.ca"],
    },
];

/// Providers used everywhere.
pub(crate) const GLOBAL_PROVIDERS: &[&str] = &[
    "gmail.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
    "yahoo.com",
];

/// Retail chains. The country is where the stores are; customers mostly live there too.
pub(crate) const RETAILERS: [Retailer; 9] = [
    Retailer {
        id: "hyper-fr",
        country: FR,
        currency: "EUR",
        card_prefix: "6280",
        store_style: StoreStyle::Postal,
    },
    Retailer {
        id: "proxi-fr",
        country: FR,
        currency: "EUR",
        card_prefix: "6281",
        store_style: StoreStyle::Gln,
    },
    Retailer {
        id: "markt-de",
        country: DE,
        currency: "EUR",
        card_prefix: "6290",
        store_style: StoreStyle::Postal,
    },
    Retailer {
        id: "grocer-uk",
        country: GB,
        currency: "GBP",
        card_prefix: "6330",
        store_style: StoreStyle::Number,
    },
    Retailer {
        id: "mercado-es",
        country: ES,
        currency: "EUR",
        card_prefix: "6340",
        store_style: StoreStyle::Postal,
    },
    Retailer {
        id: "sklep-pl",
        country: PL,
        currency: "PLN",
        card_prefix: "6350",
        store_style: StoreStyle::Letter,
    },
    Retailer {
        id: "mart-us",
        country: US,
        currency: "USD",
        card_prefix: "6010",
        store_style: StoreStyle::Number,
    },
    Retailer {
        id: "winkel-nl",
        country: NL,
        currency: "EUR",
        card_prefix: "6360",
        store_style: StoreStyle::Gln,
    },
    Retailer {
        id: "epicerie-ca",
        country: CA,
        currency: "CAD",
        card_prefix: "6020",
        store_style: StoreStyle::Postal,
    },
];

/// Coupon campaigns of the programme.
pub(crate) const CAMPAIGNS: [Campaign; 9] = [
    Campaign {
        id: "SPRING26",
        code_prefix: "SPR",
        face_values: &[100, 150, 200],
    },
    Campaign {
        id: "AUTUMN26",
        code_prefix: "AUT",
        face_values: &[150, 300],
    },
    Campaign {
        id: "BLACKFRIDAY26",
        code_prefix: "BFD",
        face_values: &[500, 1000, 1500],
    },
    Campaign {
        id: "XMAS26",
        code_prefix: "XMS",
        face_values: &[300, 500, 1000],
    },
    Campaign {
        id: "WELCOME10",
        code_prefix: "WEL",
        face_values: &[1000],
    },
    Campaign {
        id: "BDAY26",
        code_prefix: "BDY",
        face_values: &[300, 500],
    },
    Campaign {
        id: "LOYAL500",
        code_prefix: "LOY",
        face_values: &[500],
    },
    // Campaigns numbered by the retailer's coupon system rather than named.
    Campaign {
        id: "CPN-2026-000451",
        code_prefix: "CPN",
        face_values: &[200, 250],
    },
    Campaign {
        id: "100045127",
        code_prefix: "MFR",
        face_values: &[50, 75, 100],
    },
];

/// Characters of coupon codes: no 0/O or 1/I, as printed on receipts.
pub(crate) const COUPON_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// GS1 company prefixes of the product catalogue (France, Germany, UK, Spain, Poland,
/// Netherlands, USA/Canada, Italy, Belgium).
pub(crate) const EAN_PREFIXES: &[&str] = &[
    "30", "31", "32", "34", "37", "40", "41", "42", "50", "84", "590", "87", "00", "03", "06",
    "80", "54",
];

/// Phone models in Android user agents.
pub(crate) const ANDROID_MODELS: &[&str] = &[
    "Pixel 8",
    "Pixel 7a",
    "SM-S918B",
    "SM-A546B",
    "Redmi Note 12",
    "moto g84 5G",
    "CPH2581",
];

/// iPhone hardware identifiers in app user agents.
pub(crate) const IPHONE_MODELS: &[&str] = &["iPhone14,2", "iPhone15,3", "iPhone16,1", "iPhone13,4"];

/// Keys of fields the policy does not know, by the object they are added to.
pub(crate) const UNKNOWN_ROOT: &[&str] = &["schema_version", "source_system", "store_manager"];
pub(crate) const UNKNOWN_CUSTOMER: &[&str] = &[
    "middle_name",
    "gender",
    "nickname",
    "loyalty_tier",
    "national_id",
];
pub(crate) const UNKNOWN_ADDRESS: &[&str] = &["line2", "floor", "state"];
pub(crate) const UNKNOWN_DEVICE: &[&str] = &["fingerprint", "mac_address", "os"];
pub(crate) const UNKNOWN_COUPON: &[&str] = &["discount_pct", "redeemed_by"];
pub(crate) const UNKNOWN_RETAILER: &[&str] = &["cashier_id", "lane"];
pub(crate) const UNKNOWN_BASKET: &[&str] = &["discount_cents", "payment_method"];
pub(crate) const UNKNOWN_ITEM: &[&str] = &["label", "vat_rate"];
pub(crate) const UNKNOWN_CONSENT: &[&str] = &["profiling", "third_parties"];
