; Inno Setup 6 script: a per-user installer for the Windows bundle, no admin rights needed.
; Build the bundle first on Windows (python installer\build.py), then:
;   ISCC /DBundleDir=<repo>\dist\allblast-<version>-windows-x86_64 /DAppVersion=<version> installer\windows\allblast.iss
; Not built or tested on the Linux machine this project is developed on: see README.md here.
; The executable names match installer\allblast.spec (GUI_NAME, ENGINE_NAME).

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef BundleDir
  #define BundleDir "..\..\dist\allblast-" + AppVersion + "-windows-x86_64"
#endif

[Setup]
AppId={{6A0F7C52-3B8E-4C1B-9B0D-2F4C1A7E5B31}
AppName=allblast
AppVersion={#AppVersion}
AppPublisher=allblast
; Per user: installs under %LOCALAPPDATA%\Programs, Start menu entry for this user only.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
DefaultDirName={autopf}\allblast
DefaultGroupName=allblast
DisableProgramGroupPage=yes
OutputDir=..\..\dist
OutputBaseFilename=allblast-{#AppVersion}-windows-x86_64-setup
Compression=lzma2/fast
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
UninstallDisplayIcon={app}\allblast.exe
InfoBeforeFile={#BundleDir}\README.txt

[Files]
Source: "{#BundleDir}\allblast.exe"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BundleDir}\allblast-engine.exe"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BundleDir}\README.txt"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BundleDir}\_internal\*"; DestDir: "{app}\_internal"; Flags: ignoreversion recursesubdirs createallsubdirs
; The demo cells are read-only here: the app opens its own copy in the user data folder.
Source: "{#BundleDir}\demo\*"; DestDir: "{app}\demo"; Flags: ignoreversion recursesubdirs createallsubdirs uninsremovereadonly; Attribs: readonly

[Icons]
Name: "{group}\allblast"; Filename: "{app}\allblast.exe"
Name: "{group}\allblast README"; Filename: "{app}\README.txt"
Name: "{group}\Uninstall allblast"; Filename: "{uninstallexe}"

[Run]
Filename: "{app}\allblast.exe"; Description: "Start allblast"; Flags: nowait postinstall skipifsilent
